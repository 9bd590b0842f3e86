// The review page: every label with its thumbnail, filtered by class, editable. An edit is
// a new event; the image's history lists every decision ever made on it.
"use strict";

let state = null;
let filter = "labeled";
let editing = null;   // image id in the editor
let editingSeen = 0;  // id of the latest event the editor shows (0: none)

async function refresh() {
  state = await api("api/state");
  document.getElementById("project").textContent = state.project;
  renderStatus(state.worker, state.model);
  renderTrust(state);
  fillFilter();
  await loadList();
}

function fillFilter() {
  const select = document.getElementById("filter");
  if (select.options.length) return;
  const options = [["labeled", "all labels"], ["suspect", "likely wrong"], ...state.classes.map((name) => [name, name]),
                   ["ood", state.ood_choice], ["skip", "skipped"], ["unreadable", "unreadable or missing"]];
  select.replaceChildren(...options.map(([value, text]) => element("option", {value}, text)));
  select.value = filter;
  select.addEventListener("change", () => { filter = select.value; loadList().catch(showError); });
}

function showError(error) {
  document.getElementById("notice").replaceChildren(element("p", {class: "error"}, String(error.message || error)));
}

async function loadList() {
  const data = await api("api/review", undefined, {filter});
  document.getElementById("shown").textContent = `${data.items.length} image${data.items.length === 1 ? "" : "s"}` +
    (filter === "suspect" ? ": labels the models put in another class (before they were learned, now, and zero-shot); " +
                            "most suspect first" : "");
  document.getElementById("labels").replaceChildren(...data.items.map((item) => {
    const picture = item.status === "ok"
      ? sharpenSmall(element("img", {src: imageUrl(item.image_id, 160), alt: item.path, loading: "lazy"}))
      : element("div", {class: "unreadable"}, item.reason || item.status);
    return element("article", {class: `card small${item.image_id === editing ? " focused" : ""}`,
                               dataset: {id: item.image_id}, title: item.path,
                               onclick: () => openEditor(item.image_id).catch(showError)},
      element("div", {class: "picture"}, picture),
      element("p", {class: "decision"}, decisionText(item.kind, item.label) || item.status,
              item.n_events > 1 ? element("span", {class: "edited"}, " edited") : null),
      item.suggestion ? element("p", {class: "suspect"}, `model thought: ${item.suggestion}`) : null,
      element("p", {class: "path"}, item.path));
  }));
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

async function openEditor(imageId) {
  const data = await api(`api/images/${imageId}/history`);
  editing = imageId;
  const last = data.events[data.events.length - 1];
  editingSeen = last ? last.id : 0;   // sent with an edit: another window's change since is a 409
  document.getElementById("editor").hidden = false;
  document.getElementById("editor-title").textContent = data.image.path;
  const image = document.getElementById("editor-image");
  image.src = data.image.status === "ok" ? imageUrl(imageId, 512) : "";
  image.alt = data.image.path;
  sharpenSmall(image);
  document.getElementById("editor-current").textContent =
    `Now: ${last ? decisionText(last.kind, last.label) : "unlabeled"}`;
  const answers = [...state.classes.map((name) => ({kind: "class", label: name, text: name})),
                   {kind: "ood", label: null, text: state.ood_choice},
                   {kind: "skip", label: null, text: "skip"},
                   {kind: "unlabel", label: null, text: "unlabel (back to the pool)"}];
  document.getElementById("editor-choices").replaceChildren(...answers.map((answer, i) =>
    element("button", {class: last && last.kind === answer.kind && last.label === answer.label ? "chosen" : "",
                       onclick: () => edit(imageId, answer).catch(showError)},
            i < Math.min(state.classes.length, 10) ? element("kbd", {}, i < 9 ? String(i + 1) : "0") : null,
            " ", answer.text)));
  document.getElementById("editor-history").replaceChildren(...data.events.map((event) =>
    element("li", {}, `${when(event.created_at)}: ${decisionText(event.kind, event.label)} (${event.source}` +
            `${event.batch_id ? `, batch ${event.batch_id}` : ""})`)));
  document.querySelectorAll("#labels .card").forEach((card) =>
    card.classList.toggle("focused", Number(card.dataset.id) === imageId));
}

async function edit(imageId, answer) {
  try {
    await api(`api/images/${imageId}/label`, {kind: answer.kind, label: answer.label, seen_event: editingSeen});
  } finally {   // after a 409 ("changed in another window") too: show the current answer
    await openEditor(imageId);
    await loadList();
  }
}

document.addEventListener("keydown", (event) => {
  if (editing === null || event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey) return;
  if (event.key === "Escape") {
    editing = null;
    document.getElementById("editor").hidden = true;
  } else if (/^[0-9]$/.test(event.key)) {
    const index = event.key === "0" ? 9 : Number(event.key) - 1;
    if (index >= state.classes.length) return;
    edit(editing, {kind: "class", label: state.classes[index]}).catch(showError);
  } else return;
  event.preventDefault();
});

document.getElementById("import-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const result = document.getElementById("import-result");
  try {
    const tasks = JSON.parse(await file.text());
    const skip = document.getElementById("import-skip-unknown").checked;
    const summary = await api("api/import/label-studio", tasks, skip ? {skip_unknown: "true"} : {});
    result.textContent = `Imported ${summary.imported} labels (${summary.unchanged} unchanged, ` +
      `${summary.unannotated} tasks without a choice, ${summary.unknown} images not in this project).`;
    await loadList();
  } catch (error) {
    result.textContent = `Nothing imported: ${error.message || error}`;
  }
  event.target.value = "";
});

renderExports();
refresh().catch(showError);
setInterval(() => api("api/state").then((next) => { state = next; renderStatus(state.worker, state.model); renderTrust(state); })
  .catch(() => {}), 3000);
