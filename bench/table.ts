/**
 * What the suite measured, and the markdown table made of it. A row is
 * chainfs's measure (the subject) plus its anchors from the same run; the
 * ratio on an anchor's line says how chainfs compares to it, always as
 * "higher is better for chainfs": anchor time / chainfs time for times,
 * chainfs rate / anchor rate for rates and IOPS.
 */
import { type Outcome, type Unit, higherIsBetter, stats } from './measure';

export interface Line {
  /** The command or what was read, as a user would type or say it. */
  label: string;
  unit: Unit;
  outcome: Outcome;
  /** Bytes each run processes: adds a GB/s column to a time line. */
  bytes?: number;
}

export interface Anchor {
  line: Line;
  /** The target: chainfs's ratio to this anchor must be at least this. */
  target?: number;
  /** How the target reads in the table, e.g. "≥ 1.5×" or "within 1.15×". */
  targetText?: string;
  /** Shown instead of a target, e.g. "the limit". */
  note?: string;
}

/** An absolute target on the subject itself (e.g. "< 300 ms"). */
export interface Limit {
  max?: number;
  min?: number;
  text: string;
}

export interface Row {
  title: string;
  subject: Line;
  anchors: Anchor[];
  limit?: Limit;
}

export interface Verdict {
  row: string;
  what: string;
  met: boolean;
  detail: string;
}

export function ratio(subject: Line, anchor: Line): number | undefined {
  if (subject.outcome.error || anchor.outcome.error || !subject.outcome.values.length || !anchor.outcome.values.length) return undefined;
  const s = stats(subject.outcome.values).median;
  const a = stats(anchor.outcome.values).median;
  if (s <= 0 || a <= 0) return undefined;
  return higherIsBetter(subject.unit) ? s / a : a / s;
}

function num(v: number, unit: Unit): string {
  switch (unit) {
    case 's': return v < 10 ? v.toFixed(2) : v.toFixed(1);
    case 'ms': return v < 10 ? v.toFixed(1) : v.toFixed(0);
    case 'GB/s': return v < 10 ? v.toFixed(2) : v.toFixed(1);
    case 'IOPS': return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
    case 'MB': return v.toFixed(0);
    case 'GETs': return Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1);
  }
}

function cells(line: Line): [string, string, string] {
  const o = line.outcome;
  if (o.error || !o.values.length) return [`n/a (${o.error ?? 'not run'})`, '', ''];
  const s = stats(o.values);
  const median = `${num(s.median, line.unit)} ${line.unit}`;
  const range = o.values.length > 1 ? `${num(s.min, line.unit)}–${num(s.max, line.unit)}` : '';
  const rate = line.bytes && line.unit === 's' ? `${(line.bytes / s.median / 1e9).toFixed(2)} GB/s` : '';
  return [median, range, rate];
}

const esc = (s: string) => s.replace(/\|/g, '\\|');

/** Two decimals, or three where two would round a miss up to the target (0.398 is not 0.40). */
function ratioText(q: number, target?: number): string {
  const two = q.toFixed(2);
  return target !== undefined && q < target && Number(two) >= Number(target.toFixed(2)) ? `${q.toFixed(3)}×` : `${two}×`;
}

export function renderRows(rows: Row[]): { markdown: string; verdicts: Verdict[] } {
  const verdicts: Verdict[] = [];
  const out = [
    '| row | measure | median | min–max | rate | chainfs ratio | target |',
    '|---|---|---:|---:|---:|---:|---|',
  ];
  let lastTitle = '';
  for (const r of rows) {
    const [m, range, rate] = cells(r.subject);
    const title = r.title === lastTitle ? '' : `**${esc(r.title)}**`;
    lastTitle = r.title;
    let target = '';
    if (r.limit) {
      const o = r.subject.outcome;
      if (o.values.length && !o.error) {
        const med = stats(o.values).median;
        const met = (r.limit.max === undefined || med < r.limit.max) && (r.limit.min === undefined || med >= r.limit.min);
        target = `${r.limit.text} ${met ? '✓' : '✗'}`;
        verdicts.push({ row: r.title, what: r.subject.label, met, detail: `${num(med, r.subject.unit)} ${r.subject.unit}, target ${r.limit.text}` });
      } else {
        target = `${r.limit.text} (not measured)`;
        verdicts.push({ row: r.title, what: r.subject.label, met: false, detail: `not measured, target ${r.limit.text}` });
      }
    }
    out.push(`| ${title} | ${esc(r.subject.label)} | ${m} | ${range} | ${rate} | | ${target} |`);
    for (const a of r.anchors) {
      const [am, arange, arate] = cells(a.line);
      const q = ratio(r.subject, a.line);
      const qs = q === undefined ? '' : ratioText(q, a.target);
      let t = a.note ?? '';
      if (a.target !== undefined) {
        const text = a.targetText ?? `≥ ${a.target}×`;
        if (q === undefined) {
          t = `${text} (not measured)`;
          verdicts.push({ row: r.title, what: `vs ${a.line.label}`, met: false, detail: `not measured, target ${text}` });
        } else {
          const met = q >= a.target;
          t = `${text} ${met ? '✓' : '✗'}`;
          verdicts.push({ row: r.title, what: `vs ${a.line.label}`, met, detail: `${qs}, target ${text}` });
        }
      }
      out.push(`| | ↳ ${esc(a.line.label)} | ${am} | ${arange} | ${arate} | ${qs} | ${esc(t)} |`);
    }
  }
  return { markdown: out.join('\n'), verdicts };
}
