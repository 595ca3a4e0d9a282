// Progressive enhancement: "Copy" buttons copy the text of the element they name. The pages
// work without this script; the values are plain text either way.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  });
}
