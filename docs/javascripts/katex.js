// Render the \( \) and \[ \] spans that pymdownx.arithmatex (generic mode) emits,
// on first load and after each instant navigation of MkDocs Material.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
