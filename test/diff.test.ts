/**
 * chainfs diff (issue #15): for every pair of views of one chain, the ranges
 * cover every 4 KiB block where the two views differ, and `--exact` gives
 * exactly those blocks; across a revert's branches the byte comparison is
 * exact. The views' bytes come from the qemu oracle (the same history as
 * qcow2 overlays), not from chainfs.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainfs } from './helpers/cli';
import { buildOracle } from './helpers/oracle';
import { buildReplica, type BuiltReplica, type Scenario } from './helpers/replica-builder';
import { expand, noBacking, rawBacking, revert } from './helpers/scenarios';

const BLOCK = 4096;
let tmp: string;
beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-diff-')); });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Range { start: number; length: number; reason: string }

/** Blocks (indices) where two images differ; past the shorter one's end every block differs. */
function differingBlocks(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  const n = Math.ceil(Math.max(a.length, b.length) / BLOCK);
  for (let i = 0; i < n; i++) {
    const s = i * BLOCK;
    const e = s + BLOCK;
    if (e > a.length || e > b.length) {
      if (!(e <= a.length && e <= b.length)) out.push(i);
      continue;
    }
    if (a.compare(b, s, e, s, e) !== 0) out.push(i);
  }
  return out;
}

function blocksOf(ranges: Range[]): Set<number> {
  const s = new Set<number>();
  for (const r of ranges) {
    expect(r.start % BLOCK).toBe(0);
    for (let o = r.start; o < r.start + r.length; o += BLOCK) s.add(o / BLOCK);
  }
  return s;
}

function diff(dir: string, args: string[]): { code: number; ranges: Range[] } {
  const r = chainfs(['diff', dir, ...args, '--json']);
  expect([0, 1], r.stderr).toContain(r.code);
  return { code: r.code ?? -1, ranges: JSON.parse(r.stdout.toString()) as Range[] };
}

/** The head chain's views, oldest first: [snapshot name | undefined for the head, oracle file]. */
function chainViews(r: BuiltReplica): [string | undefined, string][] {
  const snaps = r.views.filter((v) => v.snapshot && v.onHeadChain).map((v) => [v.snapshot, v.file] as [string, string]);
  return [...snaps, [undefined, r.views[0].file]];
}

describe.each([noBacking, rawBacking, expand, revert].map((s) => [s.name, s] as const))('%s', (_n, s: Scenario) => {
  let r: BuiltReplica;
  let oracle: Map<string, string>;
  beforeAll(() => {
    r = buildReplica(s, tmp);
    oracle = buildOracle(s, tmp).views;
  });

  it('every pair on the head chain: diff covers every differing block, --exact is exactly them', () => {
    const views = chainViews(r);
    let pairs = 0;
    for (let i = 0; i < views.length; i++) {
      for (let j = i + 1; j < views.length; j++) {
        const [from, fromFile] = views[i];
        const [to, toFile] = views[j];
        const want = differingBlocks(fs.readFileSync(oracle.get(fromFile)!), fs.readFileSync(oracle.get(toFile)!));
        const toArgs = to ? ['--to', to] : [];
        const loose = diff(r.dir, ['--from', from!, ...toArgs]);
        const covered = blocksOf(loose.ranges);
        const label = `${from} -> ${to ?? 'head'}`;
        expect(want.filter((b) => !covered.has(b)), label).toEqual([]);
        expect(loose.code, label).toBe(loose.ranges.length > 0 ? 1 : 0);
        const exact = diff(r.dir, ['--from', from!, ...toArgs, '--exact']);
        expect([...blocksOf(exact.ranges)].sort((x, y) => x - y), label).toEqual(want);
        expect(exact.code, label).toBe(want.length > 0 ? 1 : 0);
        pairs++;
      }
    }
    expect(pairs).toBeGreaterThan(0);
  });
});

describe('views not on one chain', () => {
  it("across a revert's branches the bytes are compared: exactly the differing blocks", () => {
    const r = buildReplica(revert, tmp);
    const oracle = buildOracle(revert, tmp).views;
    const off = r.views.find((v) => v.snapshot && !v.onHeadChain)!;
    const want = differingBlocks(fs.readFileSync(oracle.get(off.file)!), fs.readFileSync(oracle.get(r.views[0].file)!));
    const d = diff(r.dir, ['--from', off.snapshot!]);
    expect([...blocksOf(d.ranges)].sort((x, y) => x - y)).toEqual(want);
    expect(d.ranges.every((x) => x.reason === 'compare')).toBe(true);
    expect(want.length).toBeGreaterThan(0);
    expect(d.code).toBe(1);
  });

  it('a view against itself: nothing changed, exit 0; an unknown --from: exit 2 with one line', () => {
    const r = buildReplica(noBacking, tmp);
    const d = diff(r.dir, ['--from', 'user-snap-2', '--to', 'user-snap-2']);
    expect(d).toEqual({ code: 0, ranges: [] });
    const bad = chainfs(['diff', r.dir, '--from', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/no snapshot named "nope"/);
  });
});
