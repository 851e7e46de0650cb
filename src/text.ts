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

/**
 * Orders names by UTF-16 code units, as `LC_ALL=C ls` does: stable across
 * machines, and cheap (String.prototype.localeCompare starts ICU's collator
 * on its first call, ~6 ms of every command's start-up).
 */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `a, b, c, and 5 more`: the first `max` names of a list for a one-line message. */
export function nameList(names: readonly string[], max = 8): string {
  return `${names.slice(0, max).join(', ')}${names.length > max ? `, and ${names.length - max} more` : ''}`;
}

/**
 * "did you mean a, b, c?" with the names nearest to `query` (edit distance),
 * or the short list when there are few; never a line of 40 names.
 */
export function didYouMean(query: string, names: string[], what: string): string {
  if (names.length === 0) return `there are no ${what}`;
  if (names.length <= 5) return `${what}: ${names.join(', ')}`;
  const near = names.map((n) => ({ n, d: editDistance(query, n.slice(0, Math.max(query.length, 1) + 2)) }))
    .sort((x, y) => x.d - y.d || compareText(x.n, y.n)).slice(0, 3).map((x) => x.n);
  return `did you mean ${near.join(', ')}? (${names.length} ${what}; inspect lists them)`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
