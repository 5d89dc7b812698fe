// The page: PNG letters dropped or chosen, or one drawn, are read as 28x28 greyscale pixels
// (0-255, a letter light on dark as in notMNIST) and posted to /invocations; each answer shows
// the letter, its 10 probabilities as bars and the version that answered (X-Model-Version).
"use strict";

const LETTERS = "ABCDEFGHIJ";
const SIZE = 28;

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// RGBA pixels of a 28x28 canvas -> rows of greyscale values, transparent taken as black
function pixelsOf(context) {
  const data = context.getImageData(0, 0, SIZE, SIZE).data;
  const rows = [];
  for (let y = 0; y < SIZE; y++) {
    const row = [];
    for (let x = 0; x < SIZE; x++) {
      const i = (y * SIZE + x) * 4;
      const grey = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      row.push(Math.round((grey * data[i + 3]) / 255));
    }
    rows.push(row);
  }
  return rows;
}

function smallCanvas() {
  const canvas = document.createElement("canvas");
  canvas.width = SIZE;
  canvas.height = SIZE;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  return [canvas, context];
}

async function imageOf(file) {
  const bitmap = await createImageBitmap(file);
  const [canvas, context] = smallCanvas();
  context.drawImage(bitmap, 0, 0, SIZE, SIZE);
  return { name: file.name, canvas, pixels: pixelsOf(context) };
}

async function predict(images) {
  if (!images.length) return;
  showError("");
  let answer;
  try {
    answer = await fetch("invocations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ inputs: images.map((image) => image.pixels) }),
    });
  } catch (error) {
    showError(`The server did not answer: ${error}`);
    return;
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    showError(`${answer.status}: ${body.message || answer.statusText}`);
    return;
  }
  const version = answer.headers.get("X-Model-Version");
  body.predictions.forEach((prediction, i) => show(images[i], prediction, version));
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(image, prediction, version) {
  const card = element("article", "result");
  const top = element("div", "top");
  top.append(image.canvas);
  const said = element("div");
  said.append(element("div", "letter", prediction.letter));
  said.append(element("div", "name", image.name));
  said.append(element("div", "version", `version ${version}`));
  top.append(said);
  card.append(top);
  const bars = element("div", "bars");
  prediction.probabilities.forEach((p, k) => {
    const bar = element("div", LETTERS[k] === prediction.letter ? "bar best" : "bar");
    bar.dataset.letter = LETTERS[k];
    bar.dataset.probability = String(p);
    const track = element("div", "track");
    const fill = element("div", "fill");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    bar.append(element("span", "label", LETTERS[k]), track, element("span", "value", `${(100 * p).toFixed(1)}%`));
    bars.append(bar);
  });
  card.append(bars);
  $("results").prepend(card);
}

async function predictFiles(files) {
  const pngs = [...files].filter((file) => file.type === "image/png" || /\.png$/i.test(file.name));
  if (!pngs.length) {
    showError("Drop PNG files");
    return;
  }
  try {
    await predict(await Promise.all(pngs.map(imageOf)));
  } catch (error) {
    showError(`Cannot read the image: ${error}`);
  }
}

function setUpDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((kind) =>
    drop.addEventListener(kind, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    }),
  );
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    predictFiles(event.dataTransfer.files);
  });
  $("file").addEventListener("change", (event) => predictFiles(event.target.files));
}

function setUpPad() {
  const pad = $("pad");
  const context = pad.getContext("2d");
  const clear = () => {
    context.fillStyle = "#000";
    context.fillRect(0, 0, pad.width, pad.height);
  };
  clear();
  context.strokeStyle = "#fff";
  context.lineWidth = 24;
  context.lineCap = "round";
  context.lineJoin = "round";
  let drawing = false;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
  };
  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    pad.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...at(event));
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...at(event));
    context.stroke();
  });
  pad.addEventListener("pointerup", () => (drawing = false));
  $("clear").addEventListener("click", clear);
  $("predict-drawing").addEventListener("click", () => {
    const [canvas, small] = smallCanvas();
    small.drawImage(pad, 0, 0, SIZE, SIZE);
    predict([{ name: "drawing", canvas, pixels: pixelsOf(small) }]);
  });
}

async function showServing() {
  try {
    const answer = await fetch("version");
    const body = await answer.json();
    $("serving").textContent = answer.ok
      ? `Serving ${body.model}: version ${body.version}, loaded ${body.loaded_at}`
      : `Not ready: ${body.message}`;
  } catch (error) {
    $("serving").textContent = `The server did not answer: ${error}`;
  }
}

setUpDrop();
setUpPad();
showServing();
