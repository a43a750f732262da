/*
 * An SVG of one run's request starts per chain against the rate-limit window: one row per
 * chain, a tick at each page request's start, and a band below counting the starts in the
 * trailing window (the sliding log the server may keep) against the limit. Plain SVG text, no
 * dependency: a reader sees where the time goes (gaps, bursts, windows spent).
 */

export interface PlotStart {
  chain: number;
  /** Unscaled seconds from the first request. */
  atSeconds: number;
}

export function floorPlotSvg(opts: {
  title: string;
  starts: PlotStart[];
  windowSeconds: number;
  limit: number;
  boundSeconds: number;
}): string {
  const { starts, windowSeconds: W, limit } = opts;
  const chains = [...new Set(starts.map((s) => s.chain))].sort((a, b) => a - b);
  const end = Math.max(opts.boundSeconds, ...starts.map((s) => s.atSeconds)) * 1.02;
  const left = 70;
  const width = 1100;
  const rowH = 26;
  const top = 40;
  const bandH = 90;
  const plotW = width - left - 20;
  const x = (t: number) => left + (t / end) * plotW;
  const rowsH = chains.length * rowH;
  const bandTop = top + rowsH + 30;
  const height = bandTop + bandH + 50;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(opts.title)}</title>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14">${escapeXml(opts.title)}</text>`,
  );
  // Window boundaries from the first request (a fixed window opened by it), and the bound.
  for (let t = 0; t <= end; t += W) {
    out.push(
      `<line x1="${x(t).toFixed(1)}" y1="${top - 5}" x2="${x(t).toFixed(1)}" y2="${bandTop + bandH}" stroke="#ddd"/>`,
    );
    out.push(
      `<text x="${x(t).toFixed(1)}" y="${height - 28}" text-anchor="middle" fill="#666">${Math.round(t)}</text>`,
    );
  }
  out.push(
    `<line x1="${x(opts.boundSeconds).toFixed(1)}" y1="${top - 5}" x2="${x(opts.boundSeconds).toFixed(1)}" y2="${bandTop + bandH}" stroke="#c33" stroke-dasharray="4 3"/>`,
    `<text x="${x(opts.boundSeconds).toFixed(1)}" y="${top - 10}" text-anchor="middle" fill="#c33">bound ${opts.boundSeconds.toFixed(0)} s</text>`,
    `<text x="${left + plotW / 2}" y="${height - 10}" text-anchor="middle" fill="#666">seconds from the first request (window ${W} s; grid lines every window)</text>`,
  );
  chains.forEach((c, i) => {
    const y = top + i * rowH;
    out.push(`<text x="${left - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">chain ${c}</text>`);
    for (const s of starts.filter((s) => s.chain === c))
      out.push(
        `<line x1="${x(s.atSeconds).toFixed(1)}" y1="${y + 4}" x2="${x(s.atSeconds).toFixed(1)}" y2="${y + rowH - 4}" stroke="#2a6fb0" stroke-width="1.5"/>`,
      );
  });
  // Starts in the trailing window, sampled at each start: the server's sliding count.
  const sorted = starts.map((s) => s.atSeconds).sort((a, b) => a - b);
  const yBand = (n: number) => bandTop + bandH - (n / limit) * bandH;
  out.push(
    `<text x="${left - 8}" y="${bandTop + 10}" text-anchor="end">in window</text>`,
    `<line x1="${left}" y1="${yBand(limit).toFixed(1)}" x2="${left + plotW}" y2="${yBand(limit).toFixed(1)}" stroke="#c33" stroke-dasharray="2 2"/>`,
    `<text x="${left + plotW}" y="${(yBand(limit) - 3).toFixed(1)}" text-anchor="end" fill="#c33">limit ${limit}</text>`,
  );
  let lo = 0;
  const pts: string[] = [];
  sorted.forEach((t, i) => {
    while (sorted[lo]! <= t - W) lo++;
    pts.push(`${x(t).toFixed(1)},${yBand(i - lo + 1).toFixed(1)}`);
  });
  if (pts.length > 0) out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="#2a6fb0"/>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}
