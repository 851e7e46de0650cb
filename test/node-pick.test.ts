/**
 * The replica Longhorn would pick (longhorn-node.md B), on real data roots:
 * real revision.counter files, head mtimes set to the nanosecond, heads with
 * extra allocated blocks. Every expected pick below is derived by hand from
 * the rule as the comment above it states, never from the code.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeCatalog } from '../src/source/node/catalog';
import { pickReplica } from '../src/source/node/pick';
import type { NodeReport, VolumeReport } from '../src/source/node/report';
import { allocatedBytes, buildNode, type BuiltNode, type NodeReplicaSpec } from './helpers/node-builder';
import type { Scenario } from './helpers/replica-builder';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-node-pick-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const KiB = 1024;
const MiB = 1024 * KiB;
/** 2025-11-30T10:00:00Z in ns: the newest head of most volumes below. */
const T = 1_764_496_800_000_000_000n;
const S = 1_000_000_000n;
const MS = 1_000_000n;

/** A 4 MiB volume: 64 KiB of data, snapshot s1, then `headBlocks` 4 KiB blocks written into the head. */
function vol(name: string, headBlocks: number, seed: number, size = 4 * MiB): Scenario {
  return {
    name, size,
    ops: [
      { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed } },
      { op: 'snapshot', name: 's1' },
      ...(headBlocks > 0 ? [{ op: 'write' as const, offset: 1 * MiB, length: headBlocks * 4 * KiB, data: { kind: 'seed' as const, seed: seed + 1 } }] : []),
    ],
  };
}

function rep(id: string, volume: string, headBlocks: number, seed: number, extra: Partial<NodeReplicaSpec> = {}): NodeReplicaSpec {
  return { id, scenario: vol(volume, headBlocks, seed), ...extra };
}

let node: BuiltNode;
let report: NodeReport;
const volume = (name: string): VolumeReport => report.volumes.find((v) => v.name === name)!;
const kept = (v: VolumeReport) => v.replicas.filter((r) => r.kept).map((r) => r.dir).sort();

beforeAll(() => {
  node = buildNode([
    {
      cfg: 'v1.11', diskUUID: 'aaaa0000-0000-4000-8000-000000000001', replicas: [
        // revision counter: the highest (12) wins over a newer head mtime and more bytes -> rc-2aaaaaaa, the only one kept.
        rep('1aaaaaaa', 'rc', 8, 10, { revisionCounter: 10, headMtimeNs: T + 10n * S }),
        rep('2aaaaaaa', 'rc', 2, 20, { revisionCounter: 12, headMtimeNs: T }),
        // counter tie (7), mtimes differ by 1 ns: the newer head wins over more allocated bytes -> rcmt-1abababa.
        rep('1abababa', 'rcmt', 1, 35, { revisionCounter: 7, headMtimeNs: T }),
        rep('2abababa', 'rcmt', 6, 45, { revisionCounter: 7, headMtimeNs: T - 1n }),
        // counter tie and mtime tie: the most allocated head bytes (4 blocks > 2 blocks) -> rctie-2bbbbbbb.
        rep('1bbbbbbb', 'rctie', 2, 30, { revisionCounter: 7, headMtimeNs: T }),
        rep('2bbbbbbb', 'rctie', 4, 40, { revisionCounter: 7, headMtimeNs: T }),
        // everything tied: the smallest directory name -> rcall-1ccccccc.
        rep('2ccccccc', 'rcall', 3, 50, { revisionCounter: 7, headMtimeNs: T }),
        rep('1ccccccc', 'rcall', 3, 60, { revisionCounter: 7, headMtimeNs: T }),
        // salvage: newest T (1 block); T-4.999 s is in the window (4 blocks, the most) -> salv-2ddddddd;
        // T-5 s exactly is out (8 blocks would have won).
        rep('1ddddddd', 'salv', 1, 70, { headMtimeNs: T }),
        rep('2ddddddd', 'salv', 4, 80, { headMtimeNs: T - 4n * S - 999n * MS }),
      ],
    },
    {
      cfg: 'v0.8', diskUUID: 'bbbb0000-0000-4000-8000-000000000002', noise: true, replicas: [
        rep('3ddddddd', 'salv', 8, 90, { headMtimeNs: T - 5n * S }),
        // salvage, bytes tie (3 blocks each), mtimes differ inside the window: the later mtime -> salvt-1eeeeeee.
        rep('1eeeeeee', 'salvt', 3, 100, { headMtimeNs: T }),
        rep('2eeeeeee', 'salvt', 3, 110, { headMtimeNs: T - 1n }),
        // salvage, bytes and mtime tie: the smallest directory name -> salva-1fffffff.
        rep('2fffffff', 'salva', 3, 120, { headMtimeNs: T }),
        rep('1fffffff', 'salva', 3, 130, { headMtimeNs: T }),
        // one with a counter, one without: no pick.
        rep('1a1a1a1a', 'mixed', 3, 140, { revisionCounter: 5, headMtimeNs: T }),
        rep('2a2a2a2a', 'mixed', 3, 150, { headMtimeNs: T }),
      ],
    },
    {
      cfg: 'v1.7', diskUUID: 'cccc0000-0000-4000-8000-000000000003', replicas: [
        // Rebuilding and Error replicas are out, whatever their counter: only bad-3 (counter 1) is left -> bad-3b3b3b3b.
        rep('1b1b1b1b', 'bad', 3, 160, { revisionCounter: 99, headMtimeNs: T, scenario: { ...vol('bad', 3, 160), rebuilding: true } }),
        rep('2b2b2b2b', 'bad', 3, 170, { revisionCounter: 98, headMtimeNs: T, error: 'stat volume-head-001.img: input/output error' }),
        rep('3b3b3b3b', 'bad', 3, 180, { revisionCounter: 1, headMtimeNs: T - 3600n * S, scenario: { ...vol('bad', 3, 180), dirty: true } }),
        // every replica unusable: none.
        rep('1c1c1c1c', 'dead', 3, 190, { headMtimeNs: T, scenario: { ...vol('dead', 3, 190), rebuilding: true } }),
        rep('2c2c2c2c', 'dead', 3, 200, { headMtimeNs: T, revisionCounter: 'garbage' }),
        // a replica whose Size differs from the two others: out -> of the two left, the most head bytes -> size-2d2d2d2d.
        rep('1d1d1d1d', 'size', 1, 210, { headMtimeNs: T }),
        rep('2d2d2d2d', 'size', 2, 220, { headMtimeNs: T }),
        { id: '3d3d3d3d', scenario: vol('size', 9, 230, 8 * MiB), headMtimeNs: T },
      ],
    },
  ], tmp);
  const c = NodeCatalog.open(node.roots);
  report = c.report();
  c.close();
});

describe('the pick rule on real data roots', () => {
  it('test premises hold: allocated head bytes grow with the blocks written, ties are real ties', () => {
    const a = (d: string) => allocatedBytes(node.replicas.get(d)!.headPath);
    expect(a('rctie-2bbbbbbb')).toBeGreaterThan(a('rctie-1bbbbbbb'));
    expect(a('rcall-1ccccccc')).toBe(a('rcall-2ccccccc'));
    expect(a('salv-2ddddddd')).toBeGreaterThan(a('salv-1ddddddd'));
    expect(a('salv-3ddddddd')).toBeGreaterThan(a('salv-2ddddddd'));
    expect(a('salvt-1eeeeeee')).toBe(a('salvt-2eeeeeee'));
    expect(a('salva-1fffffff')).toBe(a('salva-2fffffff'));
  });

  it('revision counter: the highest wins, every replica at it is kept, the newest head mtime among them is named', () => {
    const v = volume('rc');
    expect([v.rule, v.pick]).toEqual(['revision-counter', 'rc-2aaaaaaa']);
    expect(kept(v)).toEqual(['rc-2aaaaaaa']);
    expect(v.replicas.map((r) => r.revisionCounter)).toEqual([10, 12]);
  });

  it('revision counter tie: the newest head mtime (by 1 ns) before the most allocated bytes; both kept', () => {
    const v = volume('rcmt');
    expect([v.rule, v.pick]).toEqual(['revision-counter', 'rcmt-1abababa']);
    expect(kept(v)).toEqual(['rcmt-1abababa', 'rcmt-2abababa']);
  });

  it('revision counter tie, same mtime: the most allocated head bytes', () => {
    const v = volume('rctie');
    expect([v.rule, v.pick]).toEqual(['revision-counter', 'rctie-2bbbbbbb']);
    expect(kept(v)).toEqual(['rctie-1bbbbbbb', 'rctie-2bbbbbbb']);
    expect(v.why).toMatch(/arbitrary/);
  });

  it('revision counter, everything tied: the smallest directory name', () => {
    const v = volume('rcall');
    expect([v.rule, v.pick]).toEqual(['revision-counter', 'rcall-1ccccccc']);
    expect(kept(v)).toEqual(['rcall-1ccccccc', 'rcall-2ccccccc']);
  });

  it('salvage: 4.999 s before the newest is a candidate, 5 s is not; the most allocated head bytes win; only the winner is kept', () => {
    const v = volume('salv');
    expect([v.rule, v.pick]).toEqual(['salvage', 'salv-2ddddddd']);
    expect(kept(v)).toEqual(['salv-2ddddddd']);
    const ns = Object.fromEntries(v.replicas.map((r) => [r.dir, r.headMtimeNs]));
    expect(ns).toEqual({ 'salv-1ddddddd': String(T), 'salv-2ddddddd': String(T - 4999n * MS), 'salv-3ddddddd': String(T - 5n * S) });
    expect(v.replicas.find((r) => r.dir === 'salv-3ddddddd')!.root).toBe(node.roots[1]);
  });

  it('salvage, bytes tied: the later mtime (by 1 ns)', () => {
    const v = volume('salvt');
    expect([v.rule, v.pick]).toEqual(['salvage', 'salvt-1eeeeeee']);
  });

  it('salvage, bytes and mtime tied: the smallest directory name', () => {
    const v = volume('salva');
    expect([v.rule, v.pick]).toEqual(['salvage', 'salva-1fffffff']);
    expect(kept(v)).toEqual(['salva-1fffffff']);
  });

  it('some with revision.counter, some without: no pick, and the message says --replica chooses', () => {
    const v = volume('mixed');
    expect([v.rule, v.pick]).toEqual(['ambiguous', null]);
    expect(kept(v)).toEqual([]);
    expect(v.why).toMatch(/--replica/);
  });

  it('Rebuilding and Error replicas are unusable whatever their counter; Dirty is usable', () => {
    const v = volume('bad');
    expect([v.rule, v.pick]).toEqual(['revision-counter', 'bad-3b3b3b3b']);
    const by = Object.fromEntries(v.replicas.map((r) => [r.dir, r]));
    expect(by['bad-1b1b1b1b'].usable).toBe(false);
    expect(by['bad-1b1b1b1b'].reason).toMatch(/Rebuilding/);
    expect(by['bad-2b2b2b2b'].usable).toBe(false);
    expect(by['bad-2b2b2b2b'].reason).toMatch(/Error.*input\/output error/);
    expect(by['bad-3b3b3b3b'].usable).toBe(true);
    expect(by['bad-3b3b3b3b'].dirty).toBe(true);
  });

  it('no usable replica: rule none', () => {
    const v = volume('dead');
    expect([v.rule, v.pick]).toEqual(['none', null]);
    expect(v.replicas.find((r) => r.dir === 'dead-2c2c2c2c')!.reason).toMatch(/revision\.counter/);
  });

  it('a replica whose volume.meta Size differs from the others is unusable', () => {
    const v = volume('size');
    expect(v.size).toBe(4 * MiB);
    expect(v.replicas.find((r) => r.dir === 'size-3d3d3d3d')!.reason).toMatch(/size mismatch/);
    expect([v.rule, v.pick]).toEqual(['salvage', 'size-2d2d2d2d']);
  });

  it('reports every fact per replica: root, disk UUID, head, allocated and apparent size, chain, newest snapshot', () => {
    const r = volume('rc').replicas.find((x) => x.dir === 'rc-1aaaaaaa')!;
    expect(r).toMatchObject({
      root: node.roots[0], diskUUID: 'aaaa0000-0000-4000-8000-000000000001', head: 'volume-head-001.img',
      headMtimeNs: String(T + 10n * S), headMtime: '2025-11-30T10:00:10.000000000Z',
      headAllocatedBytes: allocatedBytes(node.replicas.get('rc-1aaaaaaa')!.headPath), headSize: 4 * MiB,
      chainLength: 2, newestSnapshot: { name: 's1', created: '2024-05-01T10:00:00Z' }, usable: true, kept: false,
    });
  });
});

describe('fragile salvage inputs', () => {
  it('warns once when salvage candidates\' head mtimes are whole seconds (a copy that kept whole seconds?)', () => {
    const w = report.warnings.filter((x) => /whole seconds/.test(x));
    expect(w).toHaveLength(1);
    // salv (T, T - 5 s), salvt (T), salva (T), size (T): whole seconds under the salvage rule; rc* use the counter rule.
    expect(w[0]).toMatch(/^4 volume\(s\) picked by the salvage rule .*\(salv, salva, salvt, size\)/);
  });
});

describe('the pick rule as a function (hand-derived cases)', () => {
  const r = (dir: string, rc: number | null, t: bigint, s: number) => ({ dir, revisionCounter: rc === null ? null : BigInt(rc), headMtimeNs: t, headAllocatedBytes: s });
  it('salvage window is strict at exactly 5 s and inclusive of 4.999999999 s', () => {
    expect(pickReplica([r('a', null, T, 1), r('b', null, T - 5n * S, 100)]).pick).toBe('a');
    expect(pickReplica([r('a', null, T, 1), r('b', null, T - 5n * S + 1n, 100)]).pick).toBe('b');
  });
  it('salvage keeps only the winner even when others are in the window', () => {
    const p = pickReplica([r('a', null, T, 1), r('b', null, T - S, 2), r('c', null, T - 2n * S, 3)]);
    expect([p.pick, [...p.kept]]).toEqual(['c', ['c']]);
  });
  it('a higher counter wins over newer mtime and more bytes', () => {
    expect(pickReplica([r('a', 3, T, 100), r('b', 4, T - 3600n * S, 1)]).pick).toBe('b');
  });
  it('no usable replica: none', () => {
    expect(pickReplica([]).rule).toBe('none');
  });
});

describe('roots, noise and leftovers', () => {
  it('reads every cfg shape and a root without one', () => {
    expect(report.roots.map((r) => [r.diskUUID, r.cfgShape])).toEqual([
      ['aaaa0000-0000-4000-8000-000000000001', 'v1.11+'],
      ['bbbb0000-0000-4000-8000-000000000002', 'v0.8.1-v1.6'],
      ['cccc0000-0000-4000-8000-000000000003', 'v1.7-v1.10'],
    ]);
  });

  it('lists what belongs to no chain: non-replica entries under replicas/, files under tmp/', () => {
    const noise = report.noise.map((n) => path.relative(node.roots[1], n.path)).sort();
    expect(noise).toEqual(['replicas/lost+found', 'replicas/not-a-replica', 'replicas/notes.txt']);
    expect(report.tmp.map((t) => path.basename(t.path)).sort()).toEqual(['bi-export-1a2b3c4d.tmp', 'bi-export-1a2b3c4d.tmp.cfg']);
    expect(report.cannotKnow.join(' ')).toMatch(/1-minute/);
  });
});
