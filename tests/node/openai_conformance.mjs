// Checks JSON answers against the types of the official `openai` npm
// package, with the TypeScript compiler in strict mode: a member the API
// requires that is missing, a member the API does not have (excess
// property), or a value of the wrong type is an error. The SDK's types
// are generated from OpenAI's OpenAPI document, so this is that document's
// schema, as the SDK users' code sees it.
//
// Usage: node openai_conformance.mjs CASES.json
// CASES.json: [{"name": "...", "type": "ChatCompletion", "value": {...}}, ...]
// with type one of ChatCompletion, ChatCompletionChunk, Completion,
// CompletionChunk, CreateEmbeddingResponse, Response, ResponseStreamEvent.
// CompletionChunk is the SDK's Completion with `finish_reason: null` allowed
// on all but the last chunk, as the API streams it (the SDK types streamed
// completions with the non-streamed type).
// Prints {"checked": N, "errors": [{"name", "message"}]}.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = path.dirname(fileURLToPath(import.meta.url));
const cases = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

// `output_text` is the SDK's own convenience on Response, added after
// parsing; add it as the SDK does, so that only the API's members count.
function withOutputText(response) {
  if (response && typeof response === "object" && response.object === "response") {
    const text = (response.output ?? [])
      .flatMap((item) => item.content ?? [])
      .filter((part) => part.type === "output_text")
      .map((part) => part.text)
      .join("");
    return { ...response, output_text: text };
  }
  return response;
}

const lines = [
  'import type { ChatCompletion, ChatCompletionChunk } from "openai/resources/chat/completions";',
  'import type { Completion, CompletionChoice } from "openai/resources/completions";',
  'import type { CreateEmbeddingResponse } from "openai/resources/embeddings";',
  'import type { Response, ResponseStreamEvent } from "openai/resources/responses/responses";',
  'type ChunkChoice = Omit<CompletionChoice, "finish_reason"> & { finish_reason: CompletionChoice["finish_reason"] | null };',
  'type CompletionChunk = Omit<Completion, "choices"> & { choices: Array<ChunkChoice> };',
];
const first = lines.length;
cases.forEach((c, i) => {
  let value = c.value;
  if (c.type === "Response") value = withOutputText(value);
  if (c.type === "ResponseStreamEvent" && value.response) value = { ...value, response: withOutputText(value.response) };
  lines.push(`export const case${i}: ${c.type} = ${JSON.stringify(value)};`);
});
const file = path.join(here, `.conformance-${process.pid}.mts`);
fs.writeFileSync(file, lines.join("\n") + "\n");
try {
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  });
  const errors = ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (!d.file || d.file.fileName !== file) return { name: "(setup)", message };
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    const index = line - first;
    return { name: cases[index]?.name ?? "(setup)", message };
  });
  console.log(JSON.stringify({ checked: cases.length, errors }));
} finally {
  fs.rmSync(file, { force: true });
}
