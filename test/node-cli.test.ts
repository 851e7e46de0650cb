/**
 * Data roots through the real CLI, as an operator uses them: inspect of
 * several roots (text and JSON), cat/export of the pick and of a chosen
 * replica, the refusal without a pick, a backing image found only on
 * another disk, a real mount whose views equal `chainfs cat` of the same
 * replica directory, and the roots left untouched.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainfs, chainfsOk } from './helpers/cli';
import { cmp, isMounted, unmountAll } from './helpers/mount';
import { buildNode, type BuiltNode } from './helpers/node-builder';
import { buildOracle } from './helpers/oracle';
import type { Scenario } from './helpers/replica-builder';
import { fingerprintTree } from './helpers/tree';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-node-cli-'));
afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const KiB = 1024;
const MiB = 1024 * KiB;
const T = 1_764_496_800_000_000_000n;
const S = 1_000_000_000n;

function vol(name: string, seed: number, headBlocks: number, backing = false): Scenario {
  return {
    name, size: 8 * MiB,
    ...(backing ? { backing: { format: 'raw' as const, size: 2 * MiB, writes: [{ offset: 0, length: 256 * KiB, data: { kind: 'seed' as const, seed: 999 } }] } } : {}),
    ops: [
      { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed } },
      { op: 'snapshot', name: 'daily' },
      { op: 'write', offset: 1 * MiB, length: headBlocks * 4 * KiB, data: { kind: 'seed', seed: seed + 1 } },
    ],
  };
}

let node: BuiltNode;
let before: ReturnType<typeof fingerprintTree>[];
const dirOf = (name: string) => node.replicas.get(name)!.dir;

beforeAll(() => {
  node = buildNode([
    { cfg: 'v1.11', diskUUID: '0a1b0000-0000-4000-8000-000000000001', noise: true, replicas: [
      // salvage: both within 5 s; the 8-block head (web-9c0d1e2f) has the most bytes -> pick.
      { id: '1a2b3c4d', scenario: vol('pvc-web', 1, 4), headMtimeNs: T },
      // revision counter 41 > 40 -> db-5e6f7a8b; its backing image lives only on disk 2.
      { id: '5e6f7a8b', scenario: vol('pvc-db', 3, 2, true), revisionCounter: 41, headMtimeNs: T, backingOn: [1], backingCfg: 'v1.2' },
      // one with a counter, one without: no pick.
      { id: '7a7a7a7a', scenario: vol('pvc-odd', 7, 1), revisionCounter: 3, headMtimeNs: T },
    ] },
    { cfg: 'none', diskUUID: '', replicas: [
      { id: '9c0d1e2f', scenario: vol('pvc-web', 1, 8), headMtimeNs: T - 2n * S },
      { id: '3a4b5c6d', scenario: vol('pvc-db', 5, 2, true), revisionCounter: 40, headMtimeNs: T, backingCfg: 'v1.8' },
      { id: '8b8b8b8b', scenario: { ...vol('pvc-odd', 9, 1), rebuilding: true }, headMtimeNs: T },
      { id: '9b9b9b9b', scenario: vol('pvc-odd', 11, 1), headMtimeNs: T },
    ] },
  ], tmp);
  before = node.roots.map((r) => fingerprintTree(r));
});

afterAll(() => {
  node.roots.forEach((r, i) => expect(fingerprintTree(r)).toEqual(before[i])); // the roots are never written
});

describe('inspect ROOT...', () => {
  it('--json: roots, volumes, picks, replicas with their facts, backing images, what belongs to no chain', () => {
    const j = JSON.parse(String(chainfsOk(['inspect', ...node.roots, '--json'])));
    expect(j.roots.map((r: { path: string; diskUUID: string | null }) => [r.path, r.diskUUID])).toEqual([
      [node.roots[0], '0a1b0000-0000-4000-8000-000000000001'], [node.roots[1], null]]);
    const v = Object.fromEntries(j.volumes.map((x: { name: string }) => [x.name, x]));
    expect([v['pvc-web'].pick, v['pvc-web'].rule]).toEqual(['pvc-web-9c0d1e2f', 'salvage']);
    expect([v['pvc-db'].pick, v['pvc-db'].rule]).toEqual(['pvc-db-5e6f7a8b', 'revision-counter']);
    expect([v['pvc-odd'].pick, v['pvc-odd'].rule]).toEqual([null, 'ambiguous']);
    const web = v['pvc-web'].replicas.find((r: { dir: string }) => r.dir === 'pvc-web-1a2b3c4d');
    expect(web).toMatchObject({ root: node.roots[0], diskUUID: '0a1b0000-0000-4000-8000-000000000001', usable: true, kept: false,
      revisionCounter: null, headMtimeNs: String(T), headSize: 8 * MiB, chainLength: 2, newestSnapshot: { name: 'daily' } });
    expect(v['pvc-odd'].replicas.find((r: { dir: string }) => r.dir === 'pvc-odd-8b8b8b8b')).toMatchObject({ usable: false, rebuilding: true });
    expect(j.backingImages).toHaveLength(1);
    expect(j.backingImages[0]).toMatchObject({ dir: 'bi-pvc-db-1f2e3d4c', usedBy: ['pvc-db-3a4b5c6d', 'pvc-db-5e6f7a8b'] });
    expect(j.backingImages[0].copies.map((c: { root: string }) => c.root)).toEqual([node.roots[1]]);
    expect(j.noise.length).toBe(3);
    expect(j.tmp.length).toBe(2);
    // inspect --json words warnings as objects ({code, message, file}) or strings, by version.
    const text = (w: string | { message: string }) => (typeof w === 'string' ? w : w.message);
    expect(j.warnings.map(text).join('\n')).toMatch(/no longhorn-disk\.cfg/);
  });

  it('--volume: a volume the roots hold passes; another name is refused, listing the volumes (a typo never passes unseen)', () => {
    expect(String(chainfsOk(['inspect', ...node.roots, '--volume', 'pvc-db']))).toMatch(/pvc-db/);
    const r = chainfs(['inspect', ...node.roots, '--volume', 'pvc-dbb']);
    expect(r.code).toBe(1);
    expect(r.stderr.toString().trim()).toMatch(/: no volume named pvc-dbb \(the data roots hold: pvc-db, pvc-odd, pvc-web\)$/);
  });

  it('--volume: a volume none of whose replicas is usable is held too (inspect reports it; it has no view)', () => {
    const broken = buildNode([{ cfg: 'v1.11', diskUUID: '0a1b0000-0000-4000-8000-000000000002', replicas: [
      { id: '2b2b2b2b', scenario: vol('pvc-ok', 13, 1), revisionCounter: 5, headMtimeNs: T },
      { id: '3c3c3c3c', scenario: vol('pvc-failed', 15, 1), revisionCounter: 5, headMtimeNs: T, error: 'replica failed' },
    ] }], tmp, 'broken');
    const r = chainfs(['inspect', ...broken.roots, '--volume', 'pvc-failed']);
    expect(r.stderr.toString()).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toMatch(/pvc-failed-3c3c3c3c: not usable: Error recorded in volume\.meta: replica failed/);
    const typo = chainfs(['inspect', ...broken.roots, '--volume', 'pvc-fail']);
    expect(typo.code).toBe(1);
    expect(typo.stderr.toString().trim()).toMatch(/: no volume named pvc-fail \(the data roots hold: pvc-failed, pvc-ok\)$/);
  });

  it('text: the pick marked, why, the replicas that are not usable', () => {
    const out = String(chainfsOk(['inspect', ...node.roots]));
    expect(out).toMatch(/pvc-web-9c0d1e2f \*/);
    expect(out).toMatch(/pick: pvc-db-5e6f7a8b \(revision-counter\)/);
    expect(out).toMatch(/no pick \(ambiguous\).*--replica/);
    expect(out).toMatch(/pvc-odd-8b8b8b8b: not usable: Rebuilding/);
    expect(out).toMatch(/what offline data cannot know/);
  });
});

describe('cat, map and export with --volume / --replica', () => {
  it('cat --volume is the pick; cat --replica is that replica; both equal cat of the replica directory', () => {
    const pick = chainfsOk(['cat', ...node.roots, '--volume', 'pvc-web']);
    expect(pick.equals(chainfsOk(['cat', dirOf('pvc-web-9c0d1e2f')]))).toBe(true);
    const other = chainfsOk(['cat', ...node.roots, '--volume', 'pvc-web', '--replica', 'pvc-web-1a2b3c4d']);
    expect(other.equals(chainfsOk(['cat', dirOf('pvc-web-1a2b3c4d')]))).toBe(true);
    expect(other.equals(pick)).toBe(false);
    // --backing-file is for replicas that name a backing image: pvc-web has none and reads the same with it.
    const bf = node.replicas.get('pvc-db-5e6f7a8b')!.backingPath!;
    expect(chainfsOk(['cat', ...node.roots, '--volume', 'pvc-web', '--backing-file', bf]).equals(pick)).toBe(true);
    const snap = chainfsOk(['cat', ...node.roots, '--replica', 'pvc-web-1a2b3c4d', '--snapshot', 'daily']);
    expect(snap.equals(chainfsOk(['cat', dirOf('pvc-web-1a2b3c4d'), '--snapshot', 'daily']))).toBe(true);
  });

  it('a backing image only on another disk is found through the roots, and reads as the oracle says', () => {
    const oracle = buildOracle(vol('pvc-db', 3, 2, true), tmp);
    const head = node.replicas.get('pvc-db-5e6f7a8b')!.views[0].file;
    const got = chainfsOk(['cat', ...node.roots, '--volume', 'pvc-db']);
    expect(got.equals(fs.readFileSync(oracle.views.get(head)!))).toBe(true);
    // Alone, the replica directory cannot find it: the roots are what made it work.
    const alone = chainfs(['cat', dirOf('pvc-db-5e6f7a8b')]);
    expect(alone.code).toBe(1);
    expect(alone.stderr).toMatch(/backing image .* not found/);
  });

  it('without a pick: refuses, listing the replicas and why', () => {
    const r = chainfs(['cat', ...node.roots, '--volume', 'pvc-odd']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no replica Longhorn would pick.*--replica.*pvc-odd-7a7a7a7a.*pvc-odd-8b8b8b8b \(unusable: Rebuilding.*pvc-odd-9b9b9b9b/);
    expect(r.stderr.trim().split('\n').filter((l) => !l.includes('warning:'))).toHaveLength(1);
  });

  it('an unusable replica is refused by name unless --force', () => {
    const r = chainfs(['cat', ...node.roots, '--replica', 'pvc-odd-8b8b8b8b']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not usable: Rebuilding.*--force/);
    const forced = chainfsOk(['cat', ...node.roots, '--replica', 'pvc-odd-8b8b8b8b', '--force']);
    expect(forced.equals(chainfsOk(['cat', dirOf('pvc-odd-8b8b8b8b'), '--force']))).toBe(true);
  });

  it('unknown volume or replica: one line naming the choices', () => {
    const r = chainfs(['cat', ...node.roots, '--volume', 'pvc-nope']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no volume "pvc-nope".*pvc-db, pvc-odd, pvc-web/);
    const q = chainfs(['cat', ...node.roots, '--volume', 'pvc-web', '--replica', 'pvc-web-00000000']);
    expect(q.stderr).toMatch(/no replica "pvc-web-00000000".*pvc-web-1a2b3c4d, pvc-web-9c0d1e2f/);
  });

  it('export ROOT... OUT --volume --replica writes that replica; map names its layers', () => {
    const out = path.join(tmp, 'web-1a2b.raw');
    chainfsOk(['export', ...node.roots, out, '--volume', 'pvc-web', '--replica', 'pvc-web-1a2b3c4d', '--quiet']);
    expect(fs.readFileSync(out).equals(chainfsOk(['cat', dirOf('pvc-web-1a2b3c4d')]))).toBe(true);
    const map = JSON.parse(String(chainfsOk(['map', ...node.roots, '--volume', 'pvc-web', '--json'])));
    // The pick's head holds 8 blocks at 1 MiB (the other replica's 4).
    expect(map).toContainEqual(expect.objectContaining({ start: 1 * MiB, length: 8 * 4 * KiB, data: true, file: 'volume-head-001.img' }));
  });
});

describe('mount ROOT... MP', () => {
  const mp = path.join(tmp, 'mnt');
  beforeAll(() => {
    fs.mkdirSync(mp, { recursive: true });
    const r = chainfs(['mount', ...node.roots, mp]);
    if (r.code !== 0) throw new Error(`mount failed (${r.code}): ${r.stderr}`);
  });
  afterAll(() => {
    if (isMounted(mp)) {
      const r = chainfs(['umount', mp]);
      if (r.code !== 0) spawnSync('fusermount', ['-uz', mp]);
    }
    expect(isMounted(mp)).toBe(false);
  });

  it('shows volumes/<v>/volume.img for picks only, every usable replica, backing images, catalog.json', () => {
    expect(fs.readdirSync(mp).sort()).toEqual(['backing-images', 'catalog.json', 'volumes']);
    expect(fs.readdirSync(path.join(mp, 'volumes')).sort()).toEqual(['pvc-db', 'pvc-odd', 'pvc-web']);
    expect(fs.readdirSync(path.join(mp, 'volumes', 'pvc-web')).sort()).toEqual(['replicas', 'volume.img']);
    expect(fs.readdirSync(path.join(mp, 'volumes', 'pvc-odd')).sort()).toEqual(['replicas']); // no pick: no volume.img
    // the Rebuilding replica is not served
    expect(fs.readdirSync(path.join(mp, 'volumes', 'pvc-odd', 'replicas')).sort()).toEqual(['pvc-odd-7a7a7a7a', 'pvc-odd-9b9b9b9b']);
    expect(fs.readdirSync(path.join(mp, 'volumes', 'pvc-web', 'replicas', 'pvc-web-1a2b3c4d')).sort())
      .toEqual(['chain.json', 'snapshots', 'volume.img']);
    expect(fs.readdirSync(path.join(mp, 'backing-images'))).toEqual(['bi-pvc-db.img']);
  });

  it('every mounted view cmp-equals chainfs cat of the same replica directory', () => {
    const check = (file: string, args: string[]) => {
      const want = path.join(tmp, `want-${path.basename(args[0])}-${args.length}.img`);
      fs.writeFileSync(want, chainfsOk(args));
      expect(cmp(path.join(mp, file), want), file).toBe(true);
    };
    check('volumes/pvc-web/volume.img', ['cat', dirOf('pvc-web-9c0d1e2f')]);
    check('volumes/pvc-db/volume.img', ['cat', dirOf('pvc-db-5e6f7a8b'), '--backing-file', node.replicas.get('pvc-db-5e6f7a8b')!.backingPath!]);
    for (const d of ['pvc-web-1a2b3c4d', 'pvc-web-9c0d1e2f', 'pvc-db-3a4b5c6d', 'pvc-odd-7a7a7a7a', 'pvc-odd-9b9b9b9b']) {
      const v = d.replace(/-[0-9a-f]{8}$/, '');
      check(`volumes/${v}/replicas/${d}/volume.img`, ['cat', dirOf(d)]);
      check(`volumes/${v}/replicas/${d}/snapshots/daily.img`, ['cat', dirOf(d), '--snapshot', 'daily']);
    }
    const bi = fs.readFileSync(path.join(mp, 'backing-images', 'bi-pvc-db.img'));
    expect(bi.equals(fs.readFileSync(node.replicas.get('pvc-db-5e6f7a8b')!.backingPath!))).toBe(true);
  });

  it('catalog.json is what inspect --json prints; chain.json is the replica\'s own report', () => {
    const cat = JSON.parse(fs.readFileSync(path.join(mp, 'catalog.json'), 'utf8'));
    const inspect = JSON.parse(String(chainfsOk(['inspect', ...node.roots, '--json'])));
    expect(cat.volumes).toEqual(inspect.volumes);
    expect(cat.roots).toEqual(inspect.roots);
    const chain = JSON.parse(fs.readFileSync(path.join(mp, 'volumes/pvc-web/replicas/pvc-web-1a2b3c4d/chain.json'), 'utf8'));
    expect(chain.dir).toBe(dirOf('pvc-web-1a2b3c4d'));
  });

  it('qemu-img reads the picked volume as a raw image of the volume size', () => {
    const info = JSON.parse(String(spawnSync('qemu-img', ['info', '--output=json', path.join(mp, 'volumes/pvc-web/volume.img')]).stdout));
    expect([info.format, info['virtual-size']]).toEqual(['raw', 8 * MiB]);
  });
});

describe('mount ROOT... MP --force', () => {
  const mp = path.join(tmp, 'mnt-force');
  afterAll(() => {
    if (isMounted(mp) && chainfs(['umount', mp]).code !== 0) spawnSync('fusermount', ['-uz', mp]);
  });

  it('serves the unusable (Rebuilding) replica too, and still no volume.img without a pick', () => {
    fs.mkdirSync(mp, { recursive: true });
    const r = chainfs(['mount', ...node.roots, mp, '--force']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(path.join(mp, 'volumes', 'pvc-odd', 'replicas')).sort())
      .toEqual(['pvc-odd-7a7a7a7a', 'pvc-odd-8b8b8b8b', 'pvc-odd-9b9b9b9b']);
    expect(fs.readdirSync(path.join(mp, 'volumes', 'pvc-odd'))).not.toContain('volume.img');
    const want = path.join(tmp, 'want-rebuilding.img');
    fs.writeFileSync(want, chainfsOk(['cat', dirOf('pvc-odd-8b8b8b8b'), '--force']));
    expect(cmp(path.join(mp, 'volumes/pvc-odd/replicas/pvc-odd-8b8b8b8b/volume.img'), want)).toBe(true);
    expect(chainfs(['umount', mp]).code).toBe(0);
  });
});
