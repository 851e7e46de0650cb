import { oneLine } from './errors';

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
