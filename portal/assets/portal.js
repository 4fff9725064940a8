// Copy buttons: <button data-copy="text">. The page works without this
// script; it only saves selecting the text by hand.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    const label = button.textContent;
    button.textContent = "Copied";
    button.classList.add("done");
    setTimeout(() => { button.textContent = label; button.classList.remove("done"); }, 1500);
  } catch (_) {
    button.textContent = "Select and copy";
  }
});
