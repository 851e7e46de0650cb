import { oneLine } from '../errors';

/** Human-readable numbers for tables and messages. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/**
 * Left-aligned text table; the last column is not padded. Cells quote
 * metadata (names, labels, dates) that may hold anything: control
 * characters are escaped so a table stays a table.
 */
export function table(cells: string[][]): string {
  const rows = cells.map((r) => r.map((c) => oneLine(c)));
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length); });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd())
    .join('\n');
}
