// The page of `persec serve`: send images to POST /v1/read?pictures=true and show
// each reading with its per-character confidences and the beam's alternatives.
const results = document.getElementById("results");
const statusLine = document.getElementById("status");

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

// A character's confidence as a colour: red (0) through orange to green (1).
function colour(p) {
  return `hsl(${Math.round(120 * p)}, 70%, 40%)`;
}

function showReading(file, reading) {
  const card = document.getElementById("card").content.firstElementChild.cloneNode(true);
  card.querySelector(".original").src = URL.createObjectURL(file);
  card.querySelector(".input").src = reading.input;
  if (reading.stroke_codes && reading.semantic_codes) {
    card.querySelector(".stroke-codes").src = reading.stroke_codes;
    card.querySelector(".semantic-codes").src = reading.semantic_codes;
    card.querySelectorAll(".codes").forEach((figure) => { figure.hidden = false; });
  }
  const text = card.querySelector(".text");
  if (reading.text === "") {
    text.textContent = "(nothing read)";
  }
  [...reading.text].forEach((ch, i) => {
    const span = document.createElement("span");
    const p = reading.char_confidences[i];
    span.textContent = ch;
    span.style.borderColor = colour(p);
    span.title = `${(100 * p).toFixed(1)}%`;
    text.appendChild(span);
  });
  card.querySelector(".confidence").textContent =
    `confidence ${(100 * reading.confidence).toFixed(1)}%`;
  const list = card.querySelector(".alternatives");
  reading.alternatives.forEach((alt) => {
    const item = document.createElement("li");
    item.textContent = `${alt.text || "(empty)"}  ${(100 * alt.confidence).toFixed(1)}%`;
    list.appendChild(item);
  });
  card.dataset.text = reading.text;
  results.prepend(card);
}

async function read(files) {
  files = [...files].filter((f) => f.type.startsWith("image/") || f.type === "");
  if (!files.length) return;
  const form = new FormData();
  files.forEach((f) => form.append("images", f, f.name || "pasted.png"));
  setStatus(`reading ${files.length} image(s)…`);
  try {
    const response = await fetch("/v1/read?pictures=true", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      setStatus(body.error || `error ${response.status}`, true);
      return;
    }
    body.forEach((reading, i) => showReading(files[i], reading));
    setStatus(`read ${files.length} image(s)`);
  } catch (error) {
    setStatus(`the server did not answer: ${error}`, true);
  }
}

async function readExample(name) {
  const response = await fetch(`/examples/${encodeURIComponent(name)}`);
  const blob = await response.blob();
  await read([new File([blob], name, { type: blob.type || "image/png" })]);
}

const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  read(e.dataTransfer.files);
});
document.getElementById("files").addEventListener("change", (e) => read(e.target.files));
document.addEventListener("paste", (e) => read([...e.clipboardData.files]));

fetch("/v1/model").then((r) => r.json()).then((m) => {
  document.getElementById("model").textContent =
    `${m.decoder} decoder, ${m.decoding}; ${m.charset_size} characters; ` +
    `input ${m.input.width}×${m.input.height}; persec ${m.version}`;
});
fetch("/v1/examples").then((r) => r.json()).then((names) => {
  if (!names.length) return;
  const box = document.getElementById("examples");
  names.forEach((name) => {
    const button = document.createElement("button");
    button.textContent = name;
    button.addEventListener("click", () => readExample(name));
    box.appendChild(button);
  });
  document.getElementById("examples-line").hidden = false;
});
