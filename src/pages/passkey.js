// Passkeys: runs the WebAuthn ceremonies the pages prepare. A form with data-passkey="create"
// or "get" carries the options (JSON, binary fields in base64url) in data-options; its answer is
// posted back in the form's "credential" field, beside the sealed "ceremony" the page gave.
// Passkeys need this script; everything else on these pages works without it.
const decode = (text) => {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(base64 + "===".slice((base64.length + 3) % 4)), (c) => c.charCodeAt(0));
};
const encode = (buffer) =>
  btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function creationOptions(json) {
  const options = JSON.parse(json);
  options.challenge = decode(options.challenge);
  options.user.id = decode(options.user.id);
  for (const credential of options.excludeCredentials || []) credential.id = decode(credential.id);
  return options;
}

function requestOptions(json) {
  const options = JSON.parse(json);
  options.challenge = decode(options.challenge);
  for (const credential of options.allowCredentials || []) credential.id = decode(credential.id);
  return options;
}

function answer(credential) {
  const response = credential.response;
  const json = {
    id: credential.id,
    rawId: encode(credential.rawId),
    type: credential.type,
    response: { clientDataJSON: encode(response.clientDataJSON) },
    clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
  };
  if (response.attestationObject) {
    json.response.attestationObject = encode(response.attestationObject);
    json.response.transports = response.getTransports ? response.getTransports() : [];
  } else {
    json.response.authenticatorData = encode(response.authenticatorData);
    json.response.signature = encode(response.signature);
    json.response.userHandle = response.userHandle ? encode(response.userHandle) : null;
  }
  return JSON.stringify(json);
}

function submit(form, credential) {
  form.querySelector("input[name=credential]").value = answer(credential);
  form.submit();
}

function failed(form, error) {
  const shown = form.querySelector("[data-passkey-error]");
  if (shown && error.name !== "AbortError") {
    shown.textContent = "The passkey was not used (" + error.name + "). Try again, or use another way.";
    shown.hidden = false;
  }
}

for (const form of document.querySelectorAll("form[data-passkey]")) {
  if (!window.PublicKeyCredential) continue;
  form.hidden = false;
  const button = form.querySelector("button[data-passkey-start]");
  if (form.dataset.passkey === "create") {
    button.addEventListener("click", async () => {
      try {
        submit(form, await navigator.credentials.create({ publicKey: creationOptions(form.dataset.options) }));
      } catch (error) {
        failed(form, error);
      }
    });
    continue;
  }
  // Sign-in: the browser's autofill offers passkeys in the username field (conditional
  // mediation) where it can; the button asks with the browser's own dialog.
  let autofill = null;
  const get = async (mediation) => {
    const request = { publicKey: requestOptions(form.dataset.options) };
    if (mediation === "conditional") {
      autofill = new AbortController();
      request.mediation = "conditional";
      request.signal = autofill.signal;
    }
    try {
      submit(form, await navigator.credentials.get(request));
    } catch (error) {
      if (mediation !== "conditional") failed(form, error);
    }
  };
  button.addEventListener("click", () => {
    if (autofill) autofill.abort();
    autofill = null;
    get("optional");
  });
  if (form.dataset.conditional !== undefined && PublicKeyCredential.isConditionalMediationAvailable) {
    PublicKeyCredential.isConditionalMediationAvailable().then((available) => {
      if (available) get("conditional");
    });
  }
}
