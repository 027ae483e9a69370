-- Two blocks on every page of the book, made from the page's own metadata when Quarto renders it:
--  * under a chapter's title, what produced its numbers (from `lsuv-run`, which tools/build_book.py
--    writes into each executed notebook) and how to run it again;
--  * at the end, how to cite the page, from Quarto's citation fields (author, date, citation.*).
-- Quarto skips its own citation appendix on book pages (format-html-appendix.ts), hence the second.

local function text(x) return x and pandoc.utils.stringify(x) or "" end

local function duration(seconds)
  local s = tonumber(seconds) or 0
  if s < 90 then return string.format("%.0f s", s) end
  return string.format("%.1f min", s / 60)
end

-- The page's path inside the project, e.g. "chapters/03-baseline.ipynb".
local function page_path()
  return quarto.doc.input_file:sub(#quarto.project.directory + 2)
end

-- The page's file name without extension; a folder's index page is named after its folder.
local function page_stem()
  local rel = page_path()
  local stem = rel:match("([^/]+)%.[^./]+$") or "index"
  return stem == "index" and rel:match("([^/]+)/[^/]+$") or stem
end

-- A chapter's title without the number Quarto puts in front of it.
local function chapter_title(meta)
  local found
  pandoc.Span(meta.title or {}):walk({ Span = function(s)
    if s.classes:includes("chapter-title") then found = text(s) end
  end })
  return found or text(meta.title)
end

local function changed_box(meta)
  local box = quarto.Callout({ type = "warning", title = "Not the chapter's default run",
    content = pandoc.read("This page was built with values other than the chapter's defaults: " ..
      text(meta["lsuv-run"].changed) .. ". Its numbers describe that run, not the book's default experiment.",
      "markdown").blocks })
  return box
end

local function run_box(meta)
  local run, stem = meta["lsuv-run"], page_stem()
  local md = { string.format(
    "The numbers on this page come from build `%s`, which ran the chapter in **%s** on %s (finished %s).",
    text(run.build), duration(text(run.seconds)), text(run.machine), text(run.finished)) }
  table.insert(md, "To run it yourself, from a copy of the book's repository" ..
    (meta.book and meta.book["repo-url"] and (" (<" .. text(meta.book["repo-url"]) .. ">)") or "") ..
    ", set up once and build this chapter; a CPU is enough (a GPU is used when there is one), and the data is " ..
    "downloaded on first use:")
  table.insert(md, "```bash\nmake setup\npython tools/build_book.py --chapter " .. stem .. "\n```")
  table.insert(md, "Or open the source notebook (linked beside the contents) in Jupyter, change its " ..
    "`parameters` cell and run it; its results are then kept apart from the book's.")
  local box = quarto.Callout({ type = "note", collapse = true, content = pandoc.read(table.concat(md, "\n\n"), "markdown").blocks,
    title = "How this page was made: " .. duration(text(run.seconds)) .. " on " .. text(run.machine) })
  return box
end

local function citation(meta)
  local authors = {}
  for _, a in ipairs(meta.author or {}) do
    table.insert(authors, text(a.name or a))
  end
  local who = #authors > 0 and table.concat(authors, ", ") or "Anonymous"
  local cite = meta.citation or {}
  local book = text(cite["container-title"])
  local whole = text(cite.type) == "book"
  local title = whole and text(meta.book and meta.book.title or meta.title) or
      chapter_title(meta)
  local year = text(meta.date):sub(1, 4)
  local version = text(cite.version)
  local url = text(cite.url)
  local site = meta.book and text(meta.book["site-url"]) or ""
  if url == "" and site ~= "" then  -- the page's address: the site's plus the page's path in the project
    local path = page_path():gsub("%.[^./]+$", ".html")
    url = site:gsub("/$", "") .. "/" .. (path == "index.html" and "" or path)
  end
  local line = who .. ". " .. year .. ". " ..
      (whole and ("*" .. title .. "*") or ("\u{201C}" .. title .. ".\u{201D} In *" .. book .. "*")) ..
      (version ~= "" and (", version " .. version) or "") .. "." .. (url ~= "" and (" <" .. url .. ">") or "")
  local key = "lsuv-book" .. (whole and "" or ("-" .. page_stem()))
  local bib = string.format("@%s{%s,\n  author = {%s},\n  title = {%s},\n%s  year = {%s},\n%s%s}",
    whole and "book" or "incollection", key, table.concat(authors, " and "), title,
    whole and "" or ("  booktitle = {" .. book .. "},\n"), year,
    version ~= "" and ("  version = {" .. version .. "},\n") or "", url ~= "" and ("  url = {" .. url .. "},\n") or "")
  local blocks = pandoc.read("## Citation {.unnumbered .unlisted}\n\nFor attribution, please cite this " ..
    (whole and "book" or "chapter") .. " as:\n\n" .. line, "markdown").blocks
  table.insert(blocks, pandoc.CodeBlock(bib, pandoc.Attr("", { "bibtex" })))
  return pandoc.Div(blocks, pandoc.Attr("book-citation", { "book-citation" }))
end

function Pandoc(doc)
  if doc.meta["lsuv-run"] then
    doc.blocks:insert(1, run_box(doc.meta))
    if text(doc.meta["lsuv-run"].changed) ~= "" then
      doc.blocks:insert(1, changed_box(doc.meta))
    end
  end
  if doc.meta.citation then
    doc.blocks:insert(citation(doc.meta))
  end
  return doc
end
