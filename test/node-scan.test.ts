/**
 * Reading data roots: longhorn-disk.cfg and backing.cfg of every version
 * (shapes from longhorn-node.md A.2 and A.5, written here by hand),
 * revision.counter as the engine parses it, backing images across disks,
 * the same replica directory name on two roots, broken replicas, detection,
 * and laziness (listing opens no layer file).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChainfsError } from '../src/errors';
import { parseBackingCfg } from '../src/source/node/backing-cfg';
import { NodeCatalog } from '../src/source/node/catalog';
import { parseDiskCfg } from '../src/source/node/disk-cfg';
import { source } from '../src/source/node/index';
import { parseRevisionCounter } from '../src/source/node/revision-counter';
import { buildNode, type BuiltNode } from './helpers/node-builder';
import type { Scenario } from './helpers/replica-builder';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-node-scan-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const KiB = 1024;
const MiB = 1024 * KiB;
const T = 1_764_496_800_000_000_000n;

function vol(name: string, seed: number, backing = false): Scenario {
  return {
    name, size: 4 * MiB,
    ...(backing ? { backing: { format: 'raw' as const, size: 1 * MiB, writes: [{ offset: 0, length: 64 * KiB, data: { kind: 'seed' as const, seed: 500 } }] } } : {}),
    ops: [
      { op: 'write', offset: 0, length: 16 * KiB, data: { kind: 'seed', seed } },
      { op: 'snapshot', name: 's1' },
      { op: 'write', offset: 1 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: seed + 1 } },
    ],
  };
}

describe('longhorn-disk.cfg, every version', () => {
  it('accepts the 1-, 3- and 4-key shapes and unknown keys', () => {
    expect(parseDiskCfg('c', '{"diskUUID":"1e4f9454-0000-4000-8000-000000000001"}')).toEqual({ diskUUID: '1e4f9454-0000-4000-8000-000000000001', shape: 'v0.8.1-v1.6' });
    expect(parseDiskCfg('c', '{"diskName":"disk-1","diskUUID":"u2","diskDriver":""}')).toEqual({ diskUUID: 'u2', diskName: 'disk-1', diskDriver: '', shape: 'v1.7-v1.10' });
    expect(parseDiskCfg('c', '{"diskName":"d","diskUUID":"u3","diskDriver":"","state":"ready"}')).toMatchObject({ diskUUID: 'u3', state: 'ready', shape: 'v1.11+' });
    expect(parseDiskCfg('c', '{"diskUUID":"u4","future":1}')).toMatchObject({ diskUUID: 'u4', shape: 'unknown' });
  });

  it('refuses what is not a disk cfg, in one line naming the file', () => {
    for (const text of ['', '{', '[]', '{"diskUUID":""}', '{"diskName":"x"}', '{"diskUUID":5}']) {
      let err: unknown;
      try {
        parseDiskCfg('/r/longhorn-disk.cfg', text);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ChainfsError);
      expect((err as Error).message).toMatch(/^\/r\/longhorn-disk\.cfg: not a Longhorn disk cfg/);
      expect((err as Error).message).not.toMatch(/\n/);
    }
  });
});

describe('backing.cfg, every BIM version', () => {
  it('reads each version\'s keys and leaves the missing ones out', () => {
    expect(parseBackingCfg('c', '{"name":"bi","uuid":"3a7c1d2e","size":1048576,"url":"http://x"}'))
      .toEqual({ name: 'bi', uuid: '3a7c1d2e', size: 1048576, url: 'http://x' });
    expect(parseBackingCfg('c', '{"name":"bi","uuid":"u","size":512,"expectedChecksum":"","currentChecksum":"ab"}'))
      .toEqual({ name: 'bi', uuid: 'u', size: 512, expectedChecksum: '', currentChecksum: 'ab' });
    expect(parseBackingCfg('c', '{"name":"/data/backing-images/bi-u/backing","uuid":"u","size":512,"virtualSize":512,"realSize":0,"expectedChecksum":"","currentChecksum":"ab","modificationTime":"2023-11-14 22:13:20.123456 +0000 UTC"}'))
      .toMatchObject({ virtualSize: 512, realSize: 0, modificationTime: '2023-11-14 22:13:20.123456 +0000 UTC' });
    expect(parseBackingCfg('c', '{"size":"big"}')).toEqual({});
  });
});

describe('revision.counter as the engine parses it (Trim NULs, ParseInt base 10, int64)', () => {
  const buf = (s: string, lead = 0) => { const b = Buffer.alloc(4096); b.write(s, lead, 'latin1'); return b; };
  it('reads the counter, NULs trimmed on both ends', () => {
    expect(parseRevisionCounter(buf('15'))).toEqual({ kind: 'value', value: 15n });
    expect(parseRevisionCounter(buf('9223372036854775807', 3))).toEqual({ kind: 'value', value: 9223372036854775807n });
  });
  it('anything else is bad: the engine could not open the replica', () => {
    for (const s of ['', ' 15', '15x', '9223372036854775808', '1.5']) expect(parseRevisionCounter(buf(s)).kind, s).toBe('bad');
  });
});

describe('data roots with backing images on several disks, the same directory name twice, broken replicas', () => {
  let node: BuiltNode;
  beforeAll(() => {
    node = buildNode([
      { cfg: 'v1.7', diskUUID: 'd1000000-0000-4000-8000-000000000001', replicas: [
        { id: 'aaaa0001', scenario: vol('pvc-bi', 1, true), headMtimeNs: T, backingOn: [0, 1], backingCfg: 'v1.1' },
        { id: 'dddd0001', scenario: vol('pvc-dup', 10), headMtimeNs: T },
      ] },
      { cfg: 'v1.11', diskUUID: 'd2000000-0000-4000-8000-000000000002', replicas: [
        { id: 'dddd0001', scenario: vol('pvc-dup', 10), headMtimeNs: T - 1n },
        { id: 'bbbb0001', scenario: vol('pvc-broken', 20), headMtimeNs: T },
        { id: 'bbbb0002', scenario: vol('pvc-broken', 30), headMtimeNs: T },
      ] },
    ], tmp);
    // A copy whose size differs: the copies disagree.
    const copy = path.join(node.roots[1], 'backing-images', 'bi-pvc-bi-1f2e3d4c', 'backing');
    fs.appendFileSync(copy, Buffer.alloc(512));
    // Same size on both disks, but the recorded checksums differ.
    for (const [i, sum] of [[0, 'aa'], [1, 'bb']] as const) {
      const d = path.join(node.roots[i], 'backing-images', 'other-0f0f0f0f');
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'backing'), Buffer.alloc(4096, 7));
      fs.writeFileSync(path.join(d, 'backing.cfg'), `{"name":"other","uuid":"0f0f0f0f","size":4096,"expectedChecksum":"","currentChecksum":"${sum}"}`);
    }
    // A backing image no replica uses, and one whose copy never finished.
    fs.mkdirSync(path.join(node.roots[1], 'backing-images', 'golden-0c0ffee0'));
    fs.writeFileSync(path.join(node.roots[1], 'backing-images', 'golden-0c0ffee0', 'backing'), Buffer.alloc(4096));
    fs.mkdirSync(path.join(node.roots[1], 'backing-images', 'half-12345678'));
    fs.writeFileSync(path.join(node.roots[1], 'backing-images', 'half-12345678', 'backing.tmp'), Buffer.alloc(4096));
    // Break a chain: the snapshot's .meta is gone (an interrupted rebuild leaves .img without .meta).
    fs.rmSync(path.join(node.roots[1], 'replicas', 'pvc-broken-bbbb0002', 'volume-snap-s1.img.meta'));
  });

  it('copies of one backing image on two disks are one image; differing sizes are said; unused ones are listed', () => {
    const c = NodeCatalog.open(node.roots);
    try {
      const rep = c.report();
      const bi = rep.backingImages.find((b) => b.dir === 'bi-pvc-bi-1f2e3d4c')!;
      expect(bi.copies.map((x) => x.root)).toEqual(node.roots);
      expect(bi.usedBy).toEqual(['pvc-bi-aaaa0001']);
      expect(bi.mismatch).toMatch(/sizes differ/);
      expect(rep.unusedBackingImages.sort()).toEqual(['golden-0c0ffee0', 'half-12345678', 'other-0f0f0f0f']);
      expect(rep.backingImages.find((b) => b.dir === 'other-0f0f0f0f')!.mismatch).toMatch(/^copies disagree: the recorded checksum \(backing\.cfg currentChecksum\) differs/);
      expect(rep.backingImages.find((b) => b.dir === 'half-12345678')!.copies[0].problems.join()).toMatch(/backing\.tmp/);
      expect(rep.warnings.join('\n')).toMatch(/bi-pvc-bi-1f2e3d4c: copies disagree/);
      expect(rep.warnings.join('\n')).toMatch(/3 backing image\(s\) used by no replica on these roots: golden-0c0ffee0, half-12345678, other-0f0f0f0f/);
      expect(c.views().map((v) => v.path).filter((p) => p.startsWith('backing-images/')).sort())
        .toEqual(['backing-images/bi-pvc-bi.img', 'backing-images/golden.img', 'backing-images/other.img']);
    } finally {
      c.close();
    }
  });

  it('the same directory name on two roots: two replicas, named dir@N, and --replica DIR must say which', () => {
    const c = NodeCatalog.open(node.roots);
    try {
      const v = c.report().volumes.find((x) => x.name === 'pvc-dup')!;
      expect(v.replicas.map((r) => [r.dir, r.id])).toEqual([['pvc-dup-dddd0001', 'pvc-dup-dddd0001@1'], ['pvc-dup-dddd0001', 'pvc-dup-dddd0001@2']]);
      // salvage: equal bytes, @1 is 1 ns newer
      expect(v.pick).toBe('pvc-dup-dddd0001@1');
      expect(() => c.select({ replica: 'pvc-dup-dddd0001' })).toThrow(/on several roots.*@1.*@2/);
      expect(c.select({ replica: 'pvc-dup-dddd0001@2' }).path).toBe('volumes/pvc-dup/replicas/pvc-dup-dddd0001@2/volume.img');
    } finally {
      c.close();
    }
  });

  it('a broken chain makes a replica unusable, and the pick is the other one', () => {
    const c = NodeCatalog.open(node.roots);
    try {
      const v = c.report().volumes.find((x) => x.name === 'pvc-broken')!;
      const broken = v.replicas.find((r) => r.dir === 'pvc-broken-bbbb0002')!;
      expect(broken.usable).toBe(false);
      expect(broken.reason).toMatch(/broken chain: .*volume-snap-s1\.img/);
      expect(v.pick).toBe('pvc-broken-bbbb0001');
    } finally {
      c.close();
    }
  });

  it('listing every view and the report opens no chain file (lazy); a view opens on first use', async () => {
    // Chain files only: the replica catalog reads a backing image's header when it lists its views
    // (to fail them all on a bad format), and keeps it open.
    const layerFds = () => fs.readdirSync('/proc/self/fd').map((fd) => {
      try { return fs.readlinkSync(`/proc/self/fd/${fd}`); } catch { return ''; }
    }).filter((t) => t.startsWith(path.dirname(node.roots[0])) && /\.img$/.test(t));
    const c = NodeCatalog.open(node.roots);
    try {
      c.views();
      c.report();
      c.render();
      for (const f of c.files()) if (f.path === 'catalog.json') f.content();
      expect(layerFds()).toEqual([]);
      const v = await c.select({ volume: 'pvc-bi' }).open({});
      const buf = Buffer.alloc(4096);
      v.chain.read(buf, 0, 4096, 0);
      expect(layerFds().length).toBeGreaterThan(0);
    } finally {
      c.close();
    }
  });

  it('detects a root by its cfg, or by replicas/ when the cfg is gone; not a replica directory or a file', () => {
    expect(source.detect(node.roots[0])).toBe(true);
    const noCfg = path.join(tmp, 'nocfg');
    fs.mkdirSync(path.join(noCfg, 'replicas'), { recursive: true });
    expect(source.detect(noCfg)).toBe(true);
    expect(source.detect(path.join(node.roots[0], 'replicas', 'pvc-bi-aaaa0001'))).toBe(false);
    expect(source.detect(path.join(node.roots[0], 'longhorn-disk.cfg'))).toBe(false);
    expect(() => NodeCatalog.open([path.join(tmp)])).toThrow(/not a Longhorn data root: neither longhorn-disk\.cfg nor replicas\//);
    // A corrupt cfg: beside replicas/ a warning (the replicas are read), alone an error naming the file.
    const bad = path.join(tmp, 'badcfg');
    fs.mkdirSync(path.join(bad, 'replicas'), { recursive: true });
    fs.writeFileSync(path.join(bad, 'longhorn-disk.cfg'), '\0\0\0\0');
    const c = NodeCatalog.open([bad]);
    expect(c.warnings.join('\n')).toMatch(/longhorn-disk\.cfg: not a Longhorn disk cfg: invalid JSON.*reading replicas\/ anyway/);
    c.close();
    fs.rmdirSync(path.join(bad, 'replicas'));
    expect(() => NodeCatalog.open([bad])).toThrow(/badcfg\/longhorn-disk\.cfg: not a Longhorn disk cfg/);
  });
});
