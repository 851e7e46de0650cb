/**
 * `chainfs compare` against `cmp -l`: on real replicas that differ, the
 * differing 4 KiB blocks derived from every byte cmp lists must be exactly
 * the ranges compare reports; identical views (allocated zeros against a
 * hole included) exit 0; trouble exits 2.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Chain } from '../src/chain/chain';
import { compareImages, type Difference } from '../src/chain/compare';
import { ReplicaCatalog } from '../src/source/replica/catalog';
import { chainfs, chainfsOk } from './helpers/cli';
import { buildNode, type BuiltNode } from './helpers/node-builder';
import { buildReplica, type BuiltReplica, type Op, type Scenario } from './helpers/replica-builder';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-compare-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const KiB = 1024;
const MiB = 1024 * KiB;

/** The shared history: data across the 8 MiB chunk boundary, then snapshot s1. */
const base: Op[] = [
  { op: 'write', offset: 0, length: 256 * KiB, data: { kind: 'seed', seed: 1 } },
  { op: 'write', offset: 7 * MiB + 512 * KiB, length: 1 * MiB, data: { kind: 'seed', seed: 2 } },
  { op: 'snapshot', name: 's1' },
];
const a: Scenario = {
  name: 'pvc-cmp', size: 32 * MiB, ops: [...base,
    { op: 'write', offset: 8 * MiB - 4 * KiB, length: 8 * KiB, data: { kind: 'seed', seed: 3 } },
    { op: 'write', offset: 20 * MiB + 10, length: 100, data: { kind: 'seed', seed: 4 } }, // one block, 100 bytes differ
    { op: 'write', offset: 24 * MiB - 4 * KiB, length: 12 * KiB, data: { kind: 'byte', value: 7 } }, // three blocks
  ],
};
const b: Scenario = {
  name: 'pvc-cmp', size: 32 * MiB, ops: [...base,
    { op: 'write', offset: 8 * MiB - 4 * KiB, length: 8 * KiB, data: { kind: 'seed', seed: 3 } }, // the same bytes
    { op: 'write', offset: 16 * MiB, length: 12 * KiB, data: { kind: 'zero' } }, // allocated zeros over a hole: same content
    { op: 'write', offset: 24 * MiB, length: 4 * KiB, data: { kind: 'byte', value: 7 } }, // the middle block of A's three: same
    { op: 'write', offset: 30 * MiB + 5, length: 1, data: { kind: 'byte', value: 0xff } }, // one byte
  ],
};
/** By hand from the two histories: A's 20 MiB block; A's blocks at 24 MiB - 4 KiB and 24 MiB + 4 KiB (B has zeros there); B's 30 MiB block. */
const EXPECTED: Difference[] = [
  { start: 20 * MiB, length: 4 * KiB },
  { start: 24 * MiB - 4 * KiB, length: 4 * KiB },
  { start: 24 * MiB + 4 * KiB, length: 4 * KiB },
  { start: 30 * MiB, length: 4 * KiB },
];

let ra: BuiltReplica;
let rb: BuiltReplica;

beforeAll(() => {
  ra = buildReplica(a, tmp);
  rb = buildReplica(b, tmp);
});

/** Differing 4 KiB blocks from `cmp -l` (every differing byte, 1-based offsets), merged into ranges. */
function cmpRanges(x: string, y: string): Difference[] {
  const r = spawnSync('cmp', ['-l', x, y], { maxBuffer: 1 << 28, encoding: 'utf8' });
  if (r.status === 2) throw new Error(r.stderr);
  const blocks = new Set<number>();
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*(\d+)\s/.exec(line);
    if (m) blocks.add(Math.floor((Number(m[1]) - 1) / 4096));
  }
  const out: Difference[] = [];
  for (const blk of [...blocks].sort((p, q) => p - q)) {
    const last = out[out.length - 1];
    if (last && last.start + last.length === blk * 4096) last.length += 4096;
    else out.push({ start: blk * 4096, length: 4096 });
  }
  return out;
}

function flat(dir: string, name: string, extra: string[] = []): string {
  const f = path.join(tmp, `${name}.img`);
  fs.writeFileSync(f, chainfsOk(['cat', dir, ...extra]));
  return f;
}

describe('compareImages', () => {
  it('reports exactly the blocks cmp -l finds, and the hand-derived list (B\'s allocated zeros over A\'s hole are no difference)', async () => {
    const want = cmpRanges(flat(ra.dir, 'a'), flat(rb.dir, 'b'));
    expect(want).toEqual(EXPECTED);
    const ca = ReplicaCatalog.open(ra.dir);
    const cb = ReplicaCatalog.open(rb.dir);
    try {
      const va = await ca.headView().open({});
      const vb = await cb.headView().open({});
      const r = await compareImages(va.chain, vb.chain);
      expect(r.differences).toEqual(want);
      expect(r.differingBytes).toBe(want.reduce((s, d) => s + d.length, 0));
      expect(r.identical).toBe(false);
      // Only what some layer holds is read: far less than the 32 MiB volume.
      expect(r.readBytes).toBeLessThan(3 * MiB);
      expect(r.readBytes + r.skippedBytes).toBe(32 * MiB);
    } finally {
      ca.close();
      cb.close();
    }
  });

  it('without page-cache reads (readNoWait), the thread-pool path finds the same ranges', async () => {
    const ca = ReplicaCatalog.open(ra.dir);
    const cb = ReplicaCatalog.open(rb.dir);
    try {
      const only = (c: Chain) => ({
        size: c.size, runs: c.runs.bind(c), read: c.read.bind(c), readAsync: c.readAsync.bind(c),
      });
      const va = await ca.headView().open({});
      const vb = await cb.headView().open({});
      const r = await compareImages(only(va.chain), only(vb.chain));
      expect(r.differences).toEqual(EXPECTED);
      // Small steps and chunks: pieces end inside the runs, and across the 8 MiB data boundary.
      const r2 = await compareImages(va.chain, vb.chain, { stepBytes: 8 * KiB, chunkBytes: 12 * KiB });
      expect(r2.differences).toEqual(EXPECTED);
    } finally {
      ca.close();
      cb.close();
    }
  });

  it('a view compared with itself is identical; a snapshot against zeros differs where its data is', async () => {
    const cb = ReplicaCatalog.open(rb.dir);
    try {
      const v = await cb.headView().open({});
      expect((await compareImages(v.chain, v.chain)).identical).toBe(true);
      const zeros = new Chain([], 32 * MiB);
      const r = await compareImages(zeros, (await cb.select({ snapshot: 's1' }).open({})).chain);
      // Against all zeros, s1 differs exactly where its seed data is (no 4 KiB of random bytes is all zeros).
      expect(r.differences).toEqual([{ start: 0, length: 256 * KiB }, { start: 7 * MiB + 512 * KiB, length: 1 * MiB }]);
    } finally {
      cb.close();
    }
  });

  it('a replica\'s head against its own snapshot reads only what the head holds (the rest is the same file)', async () => {
    const ca = ReplicaCatalog.open(ra.dir);
    try {
      const head = await ca.headView().open({});
      const s1 = await ca.select({ snapshot: 's1' }).open({});
      const r = await compareImages(head.chain, s1.chain);
      // By hand: A's head holds 8 KiB at 8 MiB - 4 KiB, the 20 MiB block, 12 KiB at 24 MiB - 4 KiB: 24 KiB.
      expect(r.readBytes).toBe(24 * KiB);
      expect(r.differences).toEqual(cmpRanges(flat(ra.dir, 'a-head'), flat(ra.dir, 'a-s1', ['--snapshot', 's1'])));
    } finally {
      ca.close();
    }
  });

  it('sizes that differ: the longer tail counts as different', async () => {
    const r = await compareImages(new Chain([], 8 * MiB), new Chain([], 8 * MiB + 4096));
    expect(r.differences).toEqual([{ start: 8 * MiB, length: 4096 }]);
  });
});

describe('chainfs compare', () => {
  it('DIR1 DIR2 --json: the ranges cmp -l finds, exit 1', () => {
    const r = chainfs(['compare', ra.dir, rb.dir, '--json']);
    expect(r.code, r.stderr).toBe(1);
    const j = JSON.parse(String(r.stdout));
    expect(j.differences).toEqual(cmpRanges(flat(ra.dir, 'a2'), flat(rb.dir, 'b2')));
    expect(j).toMatchObject({ identical: false, differingBytes: 4 * 4 * KiB, sizeA: 32 * MiB, sizeB: 32 * MiB });
  });

  it('--workers 2: the same ranges, read and compared on worker threads', () => {
    const r = chainfs(['compare', ra.dir, rb.dir, '--json', '--workers', '2']);
    expect(r.code, r.stderr).toBe(1);
    expect(JSON.parse(String(r.stdout)).differences).toEqual(EXPECTED);
    const same = chainfs(['compare', ra.dir, rb.dir, '--snapshot', 's1', '--workers', '2']);
    expect(same.code, same.stderr).toBe(0);
    expect(chainfs(['compare', ra.dir, rb.dir, '--workers', 'x']).code).toBe(2);
  });

  it('--snapshot compares one snapshot across replicas: identical, exit 0', () => {
    const r = chainfs(['compare', ra.dir, rb.dir, '--snapshot', 's1']);
    expect(r.code, r.stderr).toBe(0);
    expect(String(r.stdout)).toMatch(/identical/);
  });

  it('text output lists every range, then the totals', () => {
    const r = chainfs(['compare', ra.dir, rb.dir]);
    expect(r.code).toBe(1);
    const lines = String(r.stdout).trim().split('\n');
    expect(lines.filter((l) => /^\d+ \d+$/.test(l))).toEqual(EXPECTED.map((d) => `${d.start} ${d.length}`));
    expect(lines[lines.length - 1]).toMatch(/^differ: 4 range\(s\), 16384 bytes/);
  });

  it('trouble exits 2 with one line', () => {
    const r = chainfs(['compare', ra.dir, path.join(tmp, 'nope')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(chainfs(['compare', ra.dir]).code).toBe(2);
    const j = chainfs(['compare', ra.dir, path.join(tmp, 'nope'), '--json']);
    expect(j.code).toBe(2);
    expect(JSON.parse(String(j.stdout)).error.code).toBe('not-found');
  });
});

describe('chainfs compare on data roots', () => {
  let node: BuiltNode;
  beforeAll(() => {
    node = buildNode([
      { cfg: 'v1.7', diskUUID: '11110000-0000-4000-8000-000000000001', replicas: [{ id: '0000aaaa', scenario: a, headMtimeNs: 1_700_000_000_000_000_000n }] },
      { cfg: 'v1.7', diskUUID: '22220000-0000-4000-8000-000000000002', replicas: [{ id: '0000bbbb', scenario: b, headMtimeNs: 1_700_000_000_000_000_000n }] },
    ], tmp);
  });

  it('ROOT... --volume V --replica R1 --replica R2: the same ranges as the two directories', () => {
    const r = chainfs(['compare', ...node.roots, '--volume', 'pvc-cmp', '--replica', 'pvc-cmp-0000aaaa', '--replica', 'pvc-cmp-0000bbbb', '--json']);
    expect(r.code, r.stderr).toBe(1);
    expect(JSON.parse(String(r.stdout)).differences).toEqual(EXPECTED);
  });

  it('ROOT... --replica R: that replica against the pick (salvage: same mtime, B has more head bytes -> B)', () => {
    const r = chainfs(['compare', ...node.roots, '--replica', 'pvc-cmp-0000bbbb', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(String(r.stdout));
    expect([j.a.view, j.b.view]).toEqual(['volumes/pvc-cmp/volume.img', 'volumes/pvc-cmp/replicas/pvc-cmp-0000bbbb/volume.img']);
  });
});
