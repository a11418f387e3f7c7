// Renders /api/openapi.json: every operation (method, path, summary, parameters, request
// body, responses) grouped by tag, and the schemas. Plain DOM, no inline script or style,
// so it runs under the pages' strict Content-Security-Policy; text goes in with
// textContent only.

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
};

const METHODS = ["get", "post", "put", "patch", "delete"];

function refName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array" && schema.items) return `${refName(schema.items)}[]`;
  if (schema.oneOf) return schema.oneOf.map(refName).join(" | ");
  return Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "object";
}

function schemaLink(schema) {
  const name = refName(schema);
  if (schema && schema.$ref) return el("a", { href: `#schema-${name}`, text: name });
  return el("code", { text: name });
}

function content(body) {
  const list = el("ul", { class: "content-types" });
  for (const [type, media] of Object.entries(body?.content || {})) {
    list.append(el("li", {}, el("code", { text: type }), media.schema ? " " : "", media.schema ? schemaLink(media.schema) : ""));
  }
  return list;
}

function operation(path, method, op) {
  const id = `op-${method}-${path.replace(/[^a-zA-Z0-9]+/g, "-")}`;
  const head = el("h3", {}, el("span", { class: `method method-${method}`, text: method.toUpperCase() }), " ", el("code", { class: "path", text: path }));
  const card = el("article", { class: "operation", id, "data-method": method, "data-path": path }, head);
  if (op.summary) card.append(el("p", { class: "summary", text: op.summary }));
  if (op.description && op.description !== op.summary) card.append(el("p", { class: "description", text: op.description }));
  if (op.parameters?.length) {
    const rows = op.parameters.map((p) => el("tr", {}, el("td", {}, el("code", { text: p.name })), el("td", { text: p.in }), el("td", { text: p.required ? "required" : "optional" }), el("td", { text: p.description || "" })));
    card.append(el("h4", { text: "Parameters" }), el("table", { class: "params" }, ...rows));
  }
  if (op.requestBody) card.append(el("h4", { text: "Request body" }), content(op.requestBody));
  const responses = Object.entries(op.responses || {}).map(([status, r]) =>
    el("li", {}, el("b", { text: status }), ` ${r.description || ""} `, content(r)));
  card.append(el("h4", { text: "Responses" }), el("ul", { class: "responses" }, ...responses));
  return card;
}

async function main() {
  const intro = document.getElementById("intro");
  let doc;
  try {
    const res = await fetch("/api/openapi.json");
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    doc = await res.json();
  } catch (e) {
    intro.replaceChildren(el("p", { class: "error", text: `The API description could not be loaded: ${e.message}` }));
    return;
  }
  intro.replaceChildren(el("h1", { text: `${doc.info.title} ${doc.info.version}` }), el("p", { text: doc.info.description || "" }), el("p", { class: "muted", text: `OpenAPI ${doc.openapi}` }));
  const byTag = new Map((doc.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = op.tags?.[0] || "other";
      if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
      byTag.get(tag).ops.push(operation(path, method, op));
    }
  }
  const toc = document.getElementById("toc");
  const ops = document.getElementById("operations");
  for (const { tag, ops: cards } of byTag.values()) {
    if (!cards.length) continue;
    toc.append(el("a", { href: `#tag-${tag.name}`, text: `${tag.name} (${cards.length})` }));
    ops.append(el("section", { id: `tag-${tag.name}`, class: "tag" }, el("h2", { text: tag.name }), tag.description ? el("p", { class: "muted", text: tag.description }) : null, ...cards));
  }
  const schemas = document.getElementById("schemas");
  schemas.append(el("h2", { text: "Schemas" }));
  for (const [name, schema] of Object.entries(doc.components?.schemas || {})) {
    schemas.append(el("details", { id: `schema-${name}`, class: "schema" }, el("summary", {}, el("code", { text: name }), schema.description ? ` ${schema.description.split("\n")[0]}` : ""), el("pre", { text: JSON.stringify(schema, null, 2) })));
  }
  document.body.dataset.ready = "true";
}

main();
