// The label page: the open batch, one card per image, the model's guess pre-selected.
// Decisions are shown at once and sent one after the other; the server's answer (the new
// state) then replaces the page's state. Between batches the page polls the worker.
"use strict";

let state = null;
let focus = 0;                 // index of the focused card
let inFlight = 0;              // decisions sent, not yet answered
let pending = Promise.resolve();
let pollTimer = null;
const selected = new Map();    // image id -> index of the selected answer
const cards = new Map();       // image id -> card element of the shown batch
const seenEvent = new Map();   // image id -> its latest decision the page knows of (0: none)
let shownBatch = null;
let conflict = null;           // "changed in another window": shown until the next decision

function answers() {
  return [...state.classes.map((name) => ({kind: "class", label: name, text: name})),
          {kind: "ood", label: null, text: state.ood_choice}];
}

function items() {
  return state && state.batch ? state.batch.items : [];
}

function answerIndex(item) {
  if (item.kind === "class") return state.classes.indexOf(item.label);
  if (item.kind === "ood") return state.classes.length;
  return Math.max(0, state.classes.indexOf(item.guess));  // a guess of a since removed class: the first
}

function selectedIndex(item) {
  return selected.has(item.image_id) ? selected.get(item.image_id) : answerIndex(item);
}

function keyName(index) {
  if (index === state.classes.length) return "N";
  return index < 9 ? String(index + 1) : index === 9 ? "0" : "";
}

function nextUndecided(from) {
  const list = items();
  for (let step = 1; step <= list.length; step++) {
    const index = (from + step) % list.length;
    if (!list[index].kind) return index;
  }
  return from;
}

async function refresh() {
  apply(await api("api/state"));
}

function remember(next) {
  // Every label names what the page last saw of its image, so that a decision made in
  // another window since is refused (409) instead of silently overwritten.
  for (const item of next.batch ? next.batch.items : []) seenEvent.set(item.image_id, item.event_id || 0);
}

function apply(next) {
  state = next;
  remember(next);
  const batchId = state.batch ? state.batch.id : null;
  if (batchId !== shownBatch) {
    shownBatch = batchId;
    selected.clear();
    const list = items();
    focus = list.findIndex((item) => !item.kind);
    if (focus < 0) focus = 0;
    buildCards();
  }
  render();
  clearTimeout(pollTimer);
  const busy = !state.batch || !["ready", "done", "error"].includes(state.worker.phase);
  pollTimer = setTimeout(poll, busy ? 400 : 3000);
}

function poll() {
  if (inFlight) {  // the answer to the decision in flight brings the state
    pollTimer = setTimeout(poll, 400);
    return;
  }
  refresh().catch(showError);
}

function showError(error) {
  document.getElementById("notice").replaceChildren(element("p", {class: "error"}, String(error.message || error)));
}

function decide(item, answer) {
  // Once every image has a decision the batch is finished on the server: nothing to change.
  if (!state.batch || items().every((other) => other.kind)) return;
  const batchId = state.batch.id;
  item.kind = answer.kind;
  item.label = answer.label;
  selected.delete(item.image_id);
  inFlight++;
  conflict = null;
  pending = pending
    .then(() => api("api/label", {batch_id: batchId, image_id: item.image_id, kind: answer.kind, label: answer.label,
                                  seen_event: seenEvent.get(item.image_id) || 0}))
    .then((next) => { inFlight--; remember(next); if (!inFlight) apply(next); })
    .catch((error) => {
      inFlight--;
      if (String(error.message).startsWith("409") && String(error.message).includes("changed in another window")) {
        conflict = `${item.path}: changed in another window; the current answer is shown.`;
      } else showError(error);
      refresh().catch(showError);
    });
  focus = nextUndecided(focus);
  render();
}

function buildCards() {
  cards.clear();
  const grid = document.getElementById("batch");
  grid.replaceChildren(...items().map((item, index) => {
    const picture = item.status === "ok"
      ? element("a", {href: imageUrl(item.image_id), target: "_blank", rel: "noopener"},
                sharpenSmall(element("img", {src: imageUrl(item.image_id, 512), alt: item.path})))
      : element("div", {class: "unreadable"}, `${item.path}: ${item.status}`);
    const card = element("article", {class: "card", dataset: {id: item.image_id}},
      element("div", {class: "picture"}, picture),
      element("p", {class: "guess"}, "guess ", element("b", {}, item.guess),
              item.calibrated === false  // a confidence nobody has checked yet is not shown
                ? element("span", {class: "uncalibrated", title: "confidences are calibrated on the labels " +
                                   "and shown from the batch after the first ten"}, " (confidence after more labels)")
                : ` ${percent(item.confidence)} %`),
      element("ol", {class: "choices"}, answers().map((answer, i) =>
        element("li", {dataset: {index: i}, onclick: () => { focus = index; decide(item, answer); }},
                element("kbd", {}, keyName(i)), " ", answer.text))),
      element("button", {class: "skip", onclick: () => { focus = index; decide(item, {kind: "skip", label: null}); }},
              element("kbd", {}, "S"), " skip"),
      element("p", {class: "decision"}));
    cards.set(item.image_id, card);
    return card;
  }));
}

function render() {
  document.getElementById("project").textContent = state.project;
  renderStatus(state.worker, state.model);
  renderTrust(state);
  renderNotice();
  items().forEach((item, index) => {
    const card = cards.get(item.image_id);
    card.classList.toggle("focused", index === focus);
    card.classList.toggle("decided", Boolean(item.kind));
    const chosen = item.kind ? answerIndex(item) : -1;
    card.querySelectorAll(".choices li").forEach((li) => {
      const i = Number(li.dataset.index);
      li.classList.toggle("selected", i === selectedIndex(item) && index === focus);
      li.classList.toggle("chosen", item.kind !== "skip" && i === chosen);
    });
    card.querySelector(".decision").textContent = item.kind ? `✓ ${decisionText(item.kind, item.label)}` : "";
    if (index === focus) card.scrollIntoView({block: "nearest"});
  });
  renderCounts();
  renderBatches();
}

function renderNotice() {
  const notice = document.getElementById("notice");
  if (state.batch) {
    const left = items().filter((item) => !item.kind).length;
    const decided = items().length - left;   // the undecided ones are among counts.unlabeled already
    notice.replaceChildren(element("p", {}, `Batch ${state.batch.id}: ${left} of ${items().length} images left. `,
      `Chosen by ${state.batch.strategy} from ${state.counts.unlabeled + decided} unlabeled images.`));
    if (conflict) notice.append(element("p", {class: "error"}, conflict));
  } else if (state.worker.phase === "done") {
    notice.replaceChildren(element("p", {}, "Every readable image is labeled or skipped. Export the results on the right."));
  } else if (state.worker.phase === "ready") {  // the worker has not picked up the finished batch yet
    notice.replaceChildren(element("p", {class: "busy"}, "Batch done: retraining… the next batch appears here."));
  } else if (state.worker.phase !== "error") {
    notice.replaceChildren(element("p", {class: "busy"}, `${state.worker.message}… the next batch appears here.`));
  }
  if (!state.batch) document.getElementById("batch").replaceChildren();
}

function renderCounts() {
  const counts = state.counts;
  const rows = state.classes.map((name, i) =>
    element("tr", {}, element("td", {}, element("kbd", {}, keyName(i))), element("td", {}, name),
            element("td", {class: "number"}, counts.per_class[name])));
  const more = [["N", state.ood_choice, counts.ood], ["S", "skipped", counts.skip],
                ["", "unlabeled", counts.unlabeled], ["", "unreadable", counts.unreadable]];
  if (counts.missing) more.push(["", "missing", counts.missing]);
  rows.push(...more.map(([key, text, n]) =>
    element("tr", {class: "other"}, element("td", {}, key ? element("kbd", {}, key) : ""),
            element("td", {}, text), element("td", {class: "number"}, n))));
  document.getElementById("counts").replaceChildren(...rows);
}

function renderBatches() {
  const rows = state.batches.map((batch) => element("tr", {},
    element("td", {}, `#${batch.id}`),
    element("td", {class: "number"}, `${batch.n_right} / ${batch.n_judged}`),
    element("td", {class: "number"}, batch.accuracy === null ? "–" : `${Math.round(100 * batch.accuracy)} %`)));
  const head = element("tr", {}, element("th", {}, "batch"), element("th", {}, "right"), element("th", {}, ""));
  document.getElementById("batches").replaceChildren(...(rows.length ? [head, ...rows] : [
    element("tr", {}, element("td", {}, "none finished yet"))]));
}

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, select, textarea") || event.altKey || event.ctrlKey || event.metaKey) return;
  const list = items();
  if (!list.length) return;
  const item = list[focus];
  const n = answers().length;
  const key = event.key;
  if (key === "ArrowRight") focus = Math.min(focus + 1, list.length - 1);
  else if (key === "ArrowLeft") focus = Math.max(focus - 1, 0);
  else if (key === "ArrowDown") selected.set(item.image_id, (selectedIndex(item) + 1) % n);
  else if (key === "ArrowUp") selected.set(item.image_id, (selectedIndex(item) - 1 + n) % n);
  else if (key === "Enter") decide(item, answers()[selectedIndex(item)]);
  else if (key === "n" || key === "N") decide(item, {kind: "ood", label: null});
  else if (key === "s" || key === "S") decide(item, {kind: "skip", label: null});
  else if (/^[0-9]$/.test(key) && (key === "0" ? 9 : Number(key) - 1) < state.classes.length) {
    decide(item, answers()[key === "0" ? 9 : Number(key) - 1]);
  } else return;
  event.preventDefault();
  render();
});

renderExports();
refresh().catch(showError);
