// fedehr ui: poll a running job's progress; sort a results table. No other script.
"use strict";

function pollJob(section) {
  const bar = document.getElementById("progress");
  const text = document.getElementById("progress-text");
  const tick = async () => {
    const reply = await fetch(section.dataset.status, {cache: "no-store"});
    const status = await reply.json();
    if (["done", "failed", "cancelled", "missing"].includes(status.state)) {
      window.location.reload();
      return;
    }
    bar.max = status.total;
    bar.value = status.done;
    text.textContent = `${status.done} of about ${status.total} continuations ` +
      `(${status.state}, ${status.seconds} s)`;
    setTimeout(tick, 400);
  };
  setTimeout(tick, 200);
}

function sortable(table) {
  table.querySelectorAll("button.sort").forEach((button) => {
    button.addEventListener("click", () => {
      const col = Number(button.dataset.col);
      const th = button.parentElement;
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach((h) => h.setAttribute("aria-sort", "none"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const body = table.tBodies[0];
      const key = (row) => {
        const cell = row.cells[col].textContent.trim();
        const number = Number(cell);
        return cell !== "" && !Number.isNaN(number) ? number : cell;
      };
      const rows = Array.from(body.rows).sort((a, b) => {
        const x = key(a), y = key(b);
        const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
          : (typeof x === "number" ? -1 : 1);
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const running = document.getElementById("running");
  if (running) pollJob(running);
  document.querySelectorAll("table.sortable").forEach(sortable);
});
