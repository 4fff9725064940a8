"""LangChain's OpenAI chat model through `maas proxy`: tools bound with
`bind_tools` are called (whole and streamed), a tool's result is answered,
and `with_structured_output` returns the Pydantic object, by JSON schema
and by function calling.

Usage: python3 langchain_tools.py BASE_URL KEY MODEL
Prints a JSON report; exits non-zero when LangChain and the gateway disagree.
"""

import json
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

base_url, key, model = sys.argv[1:4]
report = {}


@tool
def get_weather(city: str, days: int) -> str:
    """The weather forecast of a city for a number of days."""
    return "sunny"


class Person(BaseModel):
    """A person named in the text."""

    name: str
    age: int


llm = ChatOpenAI(base_url=f"{base_url}/v1", api_key=key, model=model, max_retries=0, max_tokens=64)
bound = llm.bind_tools([get_weather])

asked = bound.invoke("What is the weather in Paris for three days?")
call = asked.tool_calls[0]
assert call["name"] == "get_weather", asked
assert isinstance(call["args"]["city"], str) and isinstance(call["args"]["days"], int), call
report["tool_call"] = call["name"]

chunks = list(bound.stream("And in Rome?"))
merged = chunks[0]
for chunk in chunks[1:]:
    merged = merged + chunk
assert merged.tool_calls and merged.tool_calls[0]["name"] == "get_weather", merged
report["streamed_tool_call"] = merged.tool_calls[0]["name"]

answer = bound.invoke(
    [
        HumanMessage("What is the weather in Paris for three days?"),
        asked,
        ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]),
    ]
)
assert isinstance(answer.content, str) and answer.content.strip() and not answer.tool_calls, answer
report["answered_after_tool"] = True

for method in ["json_schema", "function_calling"]:
    person = llm.with_structured_output(Person, method=method).invoke("Ada Lovelace was 36.")
    assert isinstance(person, Person), person
    report.setdefault("structured", []).append(method)

print(json.dumps(report))
