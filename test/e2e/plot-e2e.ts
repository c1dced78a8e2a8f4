/**
 * Draws the GPU end-to-end figures (test/e2e/gpu-e2e.sh) as an SVG stacked-bar chart: per VRAM size (and mode:
 * with the page store, self-contained) one bar for the CRI checkpoint and one for the restore (CreateContainer,
 * StartContainer without the GPU thaw, the GPU thaw). A checkpoint bar is split into kybernate's own time, the
 * driver's GPU freeze, CRIU's dump, the page store's stage and the rest of containerd's call when the line carries
 * kybernate's phases, else into kybernate, the freeze and containerd + CRIU. With the node floor measured
 * (--disk-floor-gib), a mark on each bar shows it. It reads the `[e2e] N GiB: {json}` lines of the script's log;
 * when a size and mode appear more than once the last line wins (a re-run replaces a run).
 *
 *   node dist/test/e2e/plot-e2e.js e2e-cuda.log [--out chart.svg] [--title "…"]
 *
 * Convert to PNG with e.g. `rsvg-convert -o chart.png chart.svg` (Debian package librsvg2-bin).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface E2eRow {
  gib: number;
  mode?: string;
  ckptMs: number;
  preDumpMs: number;
  freezeMs: number;
  createMs: number;
  startMs: number;
  thawMs: number;
  phasesMs?: Record<string, number>;
  nodeFloor?: { checkpointMs: number; restoreMs: number };
}

interface Segment {
  label: string;
  color: string;
  ms: (r: E2eRow) => number;
}

const phase = (r: E2eRow, p: string): number => r.phasesMs?.[p] ?? 0;
const checkpointSegments: Segment[] = [
  {
    label: "containerd (rest of the call)",
    color: "#4e79a7",
    ms: (r) =>
      r.phasesMs
        ? r.ckptMs - r.preDumpMs - phase(r, "criuDump") - phase(r, "pageStore")
        : r.ckptMs - r.preDumpMs,
  },
  { label: "page store (post-dump)", color: "#b07aa1", ms: (r) => phase(r, "pageStore") },
  { label: "CRIU dump", color: "#edc948", ms: (r) => phase(r, "criuDump") },
  { label: "GPU freeze (lock + checkpoint)", color: "#f28e2b", ms: (r) => r.freezeMs },
  { label: "kybernate own (pre-dump − GPU freeze)", color: "#e15759", ms: (r) => r.preDumpMs - r.freezeMs },
];
const restoreSegments: Segment[] = [
  { label: "restore: CRI CreateContainer (archive)", color: "#9c755f", ms: (r) => r.createMs },
  {
    label: "restore: StartContainer without GPU thaw (runc, CRIU)",
    color: "#59a14f",
    ms: (r) => r.startMs - r.thawMs,
  },
  { label: "restore: GPU thaw (restore + unlock)", color: "#76b7b2", ms: (r) => r.thawMs },
];

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: "string" },
    title: { type: "string", default: "kybernate: CRI checkpoint and restore of a CUDA container vs VRAM" },
  },
});
const logFile = positionals[0];
if (!logFile || positionals.length > 1)
  throw new Error(
    "usage: plot-e2e.js LOG [--out FILE.svg] [--title TEXT] (LOG: the output of test/e2e/gpu-e2e.sh)",
  );

const text = readFileSync(logFile, "utf8");
const rows = parseLog(text, logFile);
// gpu-e2e prints "workload cuda, backend driver; times in ms" above its table: it says what was measured.
const what = /^workload [^\s,;]+, backend [^\s,;]+/m.exec(text)?.[0];
const svg = render(rows, opt.title ?? "", what ? `${what}; one run per size` : "one run per size");
if (opt.out) writeFileSync(opt.out, svg);
else process.stdout.write(svg);

function parseLog(text: string, name: string): E2eRow[] {
  const bySize = new Map<string, E2eRow>();
  for (const line of text.split("\n")) {
    const m = /\[e2e\] (\d+(?:\.\d+)?) GiB: (\{.*\})\s*$/.exec(line);
    if (!m?.[2]) continue;
    const raw = JSON.parse(m[2]) as Record<string, unknown>;
    const fields = ["gib", "ckptMs", "preDumpMs", "freezeMs", "createMs", "startMs", "thawMs"] as const;
    for (const f of fields)
      if (typeof raw[f] !== "number" || !Number.isFinite(raw[f]))
        // gpu-e2e writes null (JSON of NaN) when kybernate's log lacked a figure; a chart would hide that.
        throw new Error(
          `${name}: the ${m[1]} GiB line has no numeric "${f}" (${JSON.stringify(raw[f])}); rerun that size`,
        );
    bySize.set(`${raw.mode ?? ""} ${raw.gib}`, raw as unknown as E2eRow);
  }
  if (bySize.size === 0)
    throw new Error(
      `${name}: no "[e2e] N GiB: {…}" lines; give the log of a gpu-e2e.sh run that finished sizes`,
    );
  return [...bySize.values()].sort((a, b) => a.gib - b.gib || (a.mode ?? "").localeCompare(b.mode ?? ""));
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A tick step of 1, 2 or 5 × 10^k seconds giving at most about eight gridlines. */
function tickStep(maxS: number): number {
  const rough = maxS / 8;
  const pow = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 5, 10]) if (m * pow >= rough) return m * pow;
  return 10 * pow;
}

function render(data: E2eRow[], title: string, subtitle: string): string {
  const W = 1000;
  const H = 600;
  const left = 70;
  const right = 330; // the legend sits to the right of the plot
  const top = 60;
  const bottom = 90;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const totals = data.flatMap((r) => [r.ckptMs, r.createMs + r.startMs]);
  const step = tickStep(Math.max(...totals) / 1000);
  const yMaxS = Math.ceil(Math.max(...totals) / 1000 / step) * step;
  const y = (s: number) => top + plotH - (s / yMaxS) * plotH;
  const groupW = plotW / data.length;
  const barW = Math.min(56, groupW * 0.32);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${left}" y="24" font-size="17" font-weight="bold">${esc(title)}</text>`,
    `<text x="${left}" y="42" font-size="12" fill="#555">${esc(subtitle)}</text>`,
  );
  for (let s = 0; s <= yMaxS + 1e-9; s += step) {
    const yy = y(s).toFixed(1);
    out.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${yy}" y2="${yy}" stroke="${s === 0 ? "#333" : "#ddd"}"/>`,
      `<text x="${left - 8}" y="${yy}" text-anchor="end" dominant-baseline="middle">${Number(s.toFixed(3))}</text>`,
    );
  }
  out.push(
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#333"/>`,
    `<text transform="translate(20 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">time (s)</text>`,
    `<text x="${left + plotW / 2}" y="${H - 6}" text-anchor="middle">VRAM allocated by the workload (GiB); C = CRI checkpoint, R = restore (create + start)</text>`,
  );
  data.forEach((r, i) => {
    const cx = left + groupW * (i + 0.5);
    const bars: [Segment[], number, string][] = [
      [checkpointSegments, cx - barW - 3, "C"],
      [restoreSegments, cx + 3, "R"],
    ];
    for (const [segments, x, tag] of bars) {
      const floorMs = tag === "C" ? r.nodeFloor?.checkpointMs : r.nodeFloor?.restoreMs;
      let acc = 0;
      for (const seg of segments) {
        const s = seg.ms(r) / 1000;
        const y0 = y(acc + s);
        out.push(
          `<rect x="${x.toFixed(1)}" y="${y0.toFixed(1)}" width="${barW.toFixed(1)}" height="${(y(acc) - y0).toFixed(1)}" fill="${seg.color}"><title>${esc(seg.label)}: ${Math.round(seg.ms(r))} ms</title></rect>`,
        );
        acc += s;
      }
      if (floorMs)
        out.push(
          `<line x1="${(x - 3).toFixed(1)}" x2="${(x + barW + 3).toFixed(1)}" y1="${y(floorMs / 1000).toFixed(1)}" y2="${y(floorMs / 1000).toFixed(1)}" stroke="#000" stroke-width="2" stroke-dasharray="4 2"><title>node floor: ${Math.round(floorMs)} ms</title></line>`,
        );
      out.push(
        `<text x="${(x + barW / 2).toFixed(1)}" y="${(y(acc) - 5).toFixed(1)}" text-anchor="middle" font-size="12">${acc.toFixed(1)} s</text>`,
        `<text x="${(x + barW / 2).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle" font-size="12" fill="#555">${tag}</text>`,
      );
    }
    out.push(
      `<text x="${cx.toFixed(1)}" y="${top + plotH + 36}" text-anchor="middle" font-weight="bold">${r.gib} GiB</text>`,
      ...(r.mode
        ? [
            `<text x="${cx.toFixed(1)}" y="${top + plotH + 52}" text-anchor="middle" font-size="11" fill="#555">${r.mode === "store" ? "page store" : esc(r.mode)}</text>`,
          ]
        : []),
    );
  });
  const lx = left + plotW + 24;
  let ly = top + 10;
  out.push(`<text x="${lx}" y="${ly}" font-weight="bold">checkpoint (C)</text>`);
  ly += 10;
  for (const seg of [...checkpointSegments].reverse()) {
    out.push(
      `<rect x="${lx}" y="${ly}" width="14" height="14" fill="${seg.color}"/>`,
      `<text x="${lx + 20}" y="${ly + 11}" font-size="12">${esc(seg.label)}</text>`,
    );
    ly += 22;
  }
  ly += 16;
  out.push(`<text x="${lx}" y="${ly}" font-weight="bold">restore (R)</text>`);
  ly += 10;
  for (const seg of [...restoreSegments].reverse()) {
    out.push(
      `<rect x="${lx}" y="${ly}" width="14" height="14" fill="${seg.color}"/>`,
      `<text x="${lx + 20}" y="${ly + 11}" font-size="12">${esc(seg.label.replace(/^restore: /, ""))}</text>`,
    );
    ly += 22;
  }
  if (data.some((r) => r.nodeFloor)) {
    ly += 8;
    out.push(
      `<line x1="${lx}" x2="${lx + 14}" y1="${ly + 7}" y2="${ly + 7}" stroke="#000" stroke-width="2" stroke-dasharray="4 2"/>`,
      `<text x="${lx + 20}" y="${ly + 11}" font-size="12">node floor (freeze + disk write; read + thaw)</text>`,
    );
    ly += 22;
  }
  // kybernate's own share is tens of milliseconds, far too thin to see next to minutes; print it instead.
  ly += 16;
  out.push(`<text x="${lx}" y="${ly}" font-weight="bold">kybernate own time (ms)</text>`);
  for (const r of data) {
    ly += 18;
    out.push(
      `<text x="${lx}" y="${ly}" font-size="12">${r.gib} GiB${r.mode ? ` ${r.mode}` : ""}: ${Math.round(r.preDumpMs - r.freezeMs)} ms of ${(r.ckptMs / 1000).toFixed(1)} s</text>`,
    );
  }
  out.push("</svg>\n");
  return out.join("\n");
}
