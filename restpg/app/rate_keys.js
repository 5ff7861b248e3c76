() => {
  // Keyboard rating on the Rate tab: 1-5 rate the highlighted criterion and move to the next,
  // c toggles "copies the expected output", Enter saves (and moves on), arrows change item.
  // Keys typed into a text field are left alone. The Arena tab's keys are below.
  const criteria = ["rate-faithfulness", "rate-relevance", "rate-usefulness"];
  let active = 0;
  const mark = () => criteria.forEach((id, i) => {
    const el = document.getElementById(id);
    if (el) el.classList.toggle("rate-active", i === active);
  });
  const visible = (el) => el && el.offsetParent !== null;
  const click = (id) => { const el = document.getElementById(id); if (visible(el)) { el.click(); return true; } return false; };
  for (const id of ["rate-prev", "rate-next", "rate-save", "rate-load"]) {
    document.addEventListener("click", (e) => { if (e.target.closest && e.target.closest("#" + id)) { active = 0; mark(); } }, true);
  }
  // Arena: a / b vote for that side, t tie, x both bad, n another pair.
  const arenaKeys = { a: "arena-a", b: "arena-b", t: "arena-tie", x: "arena-both_bad", n: "arena-next" };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !["radio", "checkbox"].includes(t.type)) || t.isContentEditable);
    if (typing) return;
    if (visible(document.getElementById("arena-next"))) {
      if (arenaKeys[e.key] && click(arenaKeys[e.key])) e.preventDefault();
      return;
    }
    const panel = document.getElementById("rate-save");
    if (!visible(panel)) return;
    if (e.key >= "1" && e.key <= "5") {
      const group = document.getElementById(criteria[active]);
      const input = group && group.querySelector(`input[type="radio"][value="${e.key}"]`);
      if (input) {
        input.click();
        active = Math.min(active + 1, criteria.length - 1);
        mark();
        e.preventDefault();
      }
    } else if (e.key === "c") {
      const box = document.querySelector("#rate-copies input[type=checkbox]");
      if (box) { box.click(); e.preventDefault(); }
    } else if (e.key === "Enter") {
      if (click("rate-save")) e.preventDefault();
    } else if (e.key === "ArrowRight") {
      if (click("rate-next")) e.preventDefault();
    } else if (e.key === "ArrowLeft") {
      if (click("rate-prev")) e.preventDefault();
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      active = Math.max(0, Math.min(criteria.length - 1, active + (e.key === "ArrowDown" ? 1 : -1)));
      mark();
      e.preventDefault();
    }
  });
  mark();
}
