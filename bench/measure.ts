/**
 * Repetition and statistics: a measure runs once to warm up (and, where it
 * can, to check its output), then `runs` times; the table shows the median
 * and the range. A measure whose command fails becomes "n/a (error ...)"
 * and the suite carries on.
 */

/** GETs: requests an S3 server saw (a count). */
export type Unit = 's' | 'ms' | 'GB/s' | 'IOPS' | 'MB' | 'GETs';

/** Higher is better for rates and IOPS; lower for times and memory. */
export function higherIsBetter(unit: Unit): boolean {
  return unit === 'GB/s' || unit === 'IOPS';
}

export interface Outcome {
  values: number[];
  /** Set when the measure could not be taken; values is then empty. */
  error?: string;
}

export interface Stats {
  median: number;
  min: number;
  max: number;
}

export function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1] };
}

/** Thrown by a step to mark the measure n/a with this message (no stack in the table). */
export class NotAvailable extends Error {}

export interface Measure {
  /** Before every run, warm-up included: remove outputs, remount, evict... (not timed). */
  before?: () => Promise<void>;
  /** One run: returns the measured value (seconds, IOPS, ...). */
  once: () => Promise<number>;
  /** The warm-up run, when it should differ from `once` (e.g. shorter). */
  warmup?: () => Promise<unknown>;
  /** After the warm-up: check its output; throw NotAvailable if wrong. */
  verify?: () => Promise<void>;
}

function failed(e: unknown): Outcome {
  const msg = e instanceof NotAvailable ? e.message : `error: ${(e as Error).message}`;
  return { values: [], error: msg.replace(/\s+/g, ' ').slice(0, 160) };
}

/**
 * Warms up and checks every measure, then runs them in turn, `runs`
 * rounds: on a machine whose load changes, a row's measure and its anchors
 * see the same conditions, so their ratio is steadier than their times.
 * A measure that fails drops out with its error; the others go on.
 */
export async function interleave(measures: Measure[], runs: number): Promise<Outcome[]> {
  const out: Outcome[] = measures.map(() => ({ values: [] }));
  const step = async (i: number, fn: () => Promise<void>) => {
    if (out[i].error) return;
    try {
      await fn();
    } catch (e) {
      out[i] = failed(e);
    }
  };
  for (const [i, m] of measures.entries()) {
    await step(i, async () => {
      await m.before?.();
      await (m.warmup ?? m.once)();
      await m.verify?.();
    });
  }
  for (let round = 0; round < runs; round++) {
    for (const [i, m] of measures.entries()) {
      await step(i, async () => {
        await m.before?.();
        out[i].values.push(await m.once());
      });
    }
  }
  return out;
}

export async function repeat(m: Measure, runs: number): Promise<Outcome> {
  return (await interleave([m], runs))[0];
}
