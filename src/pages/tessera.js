// Progressive enhancement: "Copy" buttons copy the text of the element they name. The pages
// work without this script; the values are plain text either way.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  });
}

// Playground: count down to an access token's expiry.
for (const element of document.querySelectorAll("[data-expires-at]")) {
  const expiresAt = Number(element.dataset.expiresAt);
  const tick = () => {
    const left = Math.round(expiresAt - Date.now() / 1000);
    element.textContent = left > 0 ? `in ${left} s` : "expired";
  };
  tick();
  setInterval(tick, 1000);
}
