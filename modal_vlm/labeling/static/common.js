// Shared by the label and review pages: the API client (the access token, when the
// server requires one, rides on every URL), the status line and the export links.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");

function withToken(path, params = {}) {
  const query = new URLSearchParams(params);
  if (TOKEN) query.set("token", TOKEN);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function api(path, body, params = {}) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(withToken(path, params), options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    throw new Error(`${response.status}: ${detail || response.statusText}`);
  }
  return data;
}

function imageUrl(imageId, size) {
  return withToken(`images/${imageId}`, size ? {size} : {});
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function decisionText(kind, label) {
  if (kind === "class") return label;
  if (kind === "ood") return "none of these classes";
  if (kind === "skip") return "skipped";
  if (kind === "unlabel") return "unlabeled";
  return "";
}

// Small images (CIFAR's 32 px) are scaled up with sharp pixels rather than blurred; an
// image the server cannot deliver (unreadable, gone) says so instead of a broken icon.
function sharpenSmall(img) {
  img.addEventListener("load", () => {
    if (img.naturalWidth < 128) img.classList.add("pixelated");
  });
  img.addEventListener("error", () => {
    if (img.getAttribute("src")) img.replaceWith(element("div", {class: "unreadable"}, `${img.alt}: cannot be shown`));
  });
  return img;
}

function formatSeconds(seconds) {
  if (seconds < 1) return "1 s";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function renderStatus(worker, model) {
  const status = document.getElementById("status");
  const parts = [];
  const busy = !["ready", "done", "error"].includes(worker.phase);
  if (worker.phase === "error") {
    parts.push(element("span", {class: "error"}, `Stopped: ${worker.message}`),
               element("button", {onclick: () => api("api/retry", {}).then(refresh)}, "Retry"));
  } else {
    parts.push(element("span", {class: busy ? "busy" : ""}, worker.message));
  }
  if (busy && worker.total) {
    parts.push(element("progress", {max: worker.total, value: worker.done}),
               element("span", {class: "count"}, `${worker.done} / ${worker.total}`));
  }
  if (busy && worker.seconds_left != null) {  // from the worker's measured speed
    parts.push(element("span", {class: "eta"}, `about ${formatSeconds(worker.seconds_left)} left`));
  }
  if (worker.phase !== "encoding" && worker.encoded < worker.readable) {  // the rest of the folder
    parts.push(element("span", {class: "background"}, "encoding in the background: "),
               element("progress", {max: worker.readable, value: worker.encoded}),
               element("span", {class: "count"}, `${worker.encoded} / ${worker.readable} images in the pool`));
  }
  if (model) {
    parts.push(element("span", {class: "model"},
      `model: trained after ${model.round} batch${model.round === 1 ? "" : "es"}, ${model.n_labels} labels`));
  }
  status.replaceChildren(...parts);
  return busy;
}

function percent(x) {
  return Math.round(100 * x);
}

// The header's second line: how good the model is now (estimated from the labels, with its
// interval) and whether its predictions still move (the stopping signal), as in rounds.json.
function renderTrust(state) {
  const parts = [];
  const estimate = state.estimate;
  parts.push(estimate
    ? element("span", {class: "estimate", title: "estimated on the unlabeled images from your labels: each was " +
                       "checked against the model's guess before the model learned it (90 % interval)"},
              `about ${percent(estimate.accuracy)} % right (${percent(estimate.low)}-${percent(estimate.high)} %), ` +
              `from ${estimate.n.toLocaleString("en")} checked image${estimate.n === 1 ? "" : "s"}`)
    : element("span", {class: "estimate"}, "accuracy: estimated once images are labeled"));
  const stability = state.stability;
  if (stability) {
    const changed = 100 * stability.changed;
    parts.push(element("span", {class: stability.stable ? "stability stable" : "stability"},
      `predictions changed on ${changed < 10 ? changed.toFixed(1) : Math.round(changed)} % of ` +
      `${stability.n.toLocaleString("en")} images since the last batch` +
      (stability.stable ? ": stable, more labels of this kind change little" : "")));
  }
  document.getElementById("trust").replaceChildren(...parts);
}

function renderExports() {
  const links = [
    ["export/labels.csv", "labels (CSV)"], ["export/labels.json", "labels + history (JSON)"],
    ["export/predictions.csv", "predictions for every image (CSV)"],
    ["export/model.pkl", "trained classifier (pickle)"],
    ["export/label-studio.json", "this batch as Label Studio tasks"],
    ["export/label-studio-config.xml", "Label Studio labeling config"],
  ];
  document.getElementById("exports").replaceChildren(
    ...links.map(([path, text]) => element("li", {}, element("a", {href: withToken(path)}, text))));
}
