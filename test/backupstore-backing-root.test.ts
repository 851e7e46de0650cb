/**
 * A backup's backing image taken from a Longhorn data root given after the
 * target (`chainfs cat TARGET DATAROOT`), through the real CLI: cat, export
 * and a real mount equal the effective volume built here (the backing
 * image's bytes under the backup's blocks, zeros past its end; a qcow2
 * backing image read by qemu-img); the checksum rules (volume.cfg against
 * backing.cfg, copies against each other); precedence (--backing-file, the
 * data root, the target's own backing-image backup); the data root never
 * written, an export into it refused; mixes of sources that are refused.
 * Also a backup cfg over 256 KiB: listed from its head (every field right),
 * its block list checked when opened or verified (README, Limits).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BLOCK, MiB, TargetBuilder, fingerprint, pattern, volumeDir } from './helpers/backupstore-builder';
import { chainfs, chainfsOk } from './helpers/cli';
import { unmount, unmountAll } from './helpers/mount';
import { buildNode, type BuiltNode } from './helpers/node-builder';
import { qcow2Backing, rawBacking } from './helpers/scenarios';

const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The effective volume, built here: the backing image, then each block (2 MiB each) over it, cut at `size`. */
function effective(size: number, backing: Buffer | undefined, blocks: Map<number, Buffer>): Buffer {
  const img = Buffer.alloc(size);
  if (backing) backing.copy(img, 0, 0, Math.min(backing.length, size));
  for (const [off, data] of blocks) data.copy(img, off);
  return img;
}

let tmp: string;
let node: BuiltNode;
/** Data roots: [0] holds bi-raw-backing and bi-qcow2-backing; [1] holds the same bi-raw-backing copy. */
let root: string;
let root2: string;
/** A copy of `root` whose bi-raw-backing backing.cfg records another checksum. */
let rootOther: string;
let rawFile: string;
let rawBytes: Buffer;
let rawSum: string;
let qcowBytes: Buffer;
/** No backing-image backup: the volumes' images are only on the data roots. */
let target: string;
/** The same volume, and a backing-image backup of bi-raw-backing holding other bytes. */
let targetWithBi: string;
let biBackupBytes: Buffer;
let before: Map<string, string>;

const SIZE = 16 * MiB;
const blocks = new Map<number, Buffer>([
  [0, pattern(301, BLOCK)], // inside the backing image
  [3 * BLOCK, pattern(302, BLOCK)], // across its end (6 MiB + 512)
  [5 * BLOCK, pattern(303, BLOCK)], // past it
]);
const qBlocks = new Map<number, Buffer>([[BLOCK, pattern(311, BLOCK)]]);
const BI = 'bi-raw-backing';

function writeTarget(dir: string, withBi?: Buffer): void {
  const b = new TargetBuilder(dir);
  if (withBi) b.backingImage(BI, withBi, 'gzip');
  b.volume('vol-root', { size: SIZE, compression: 'lz4', backingImage: { name: BI, checksum: rawSum } });
  b.backup('vol-root', 'b-1', { blocks });
  b.volume('vol-q', { size: 12 * MiB, compression: 'gzip', backingImage: { name: 'bi-qcow2-backing', checksum: sha512(fs.readFileSync(qcowFile())) } });
  b.backup('vol-q', 'q-1', { blocks: qBlocks });
  // A volume backed up over another image of the same name (its checksum differs).
  b.volume('vol-other', { size: SIZE, compression: 'none', backingImage: { name: BI, checksum: 'ab'.repeat(64) } });
  b.backup('vol-other', 'o-1', { blocks: new Map([[0, pattern(321, BLOCK)]]) });
  // A volume that recorded no checksum (as an old manager may leave it).
  b.volume('vol-nosum', { size: SIZE, compression: 'none', backingImage: { name: BI, checksum: '' } });
  b.backup('vol-nosum', 'n-1', { blocks: new Map([[0, pattern(331, BLOCK)]]) });
}

const qcowFile = () => path.join(root, 'backing-images', 'bi-qcow2-backing-1f2e3d4c', 'backing');

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-root-'));
  node = buildNode([
    { cfg: 'v1.11', diskUUID: '0b1c0000-0000-4000-8000-000000000001', replicas: [
      { id: '1a2b3c4d', scenario: rawBacking, backingOn: [0, 1] },
      { id: '5e6f7a8b', scenario: qcow2Backing },
    ] },
    { cfg: 'v1.7', diskUUID: '0b1c0000-0000-4000-8000-000000000002', replicas: [] },
  ], tmp);
  [root, root2] = node.roots;
  rawFile = path.join(root, 'backing-images', `${BI}-1f2e3d4c`, 'backing');
  rawBytes = fs.readFileSync(rawFile); // a raw image reads as its bytes
  rawSum = sha512(rawBytes);
  const qraw = path.join(tmp, 'q.raw');
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcowFile(), qraw]);
  qcowBytes = fs.readFileSync(qraw);
  fs.rmSync(qraw);

  rootOther = path.join(tmp, 'root-other');
  execFileSync('cp', ['-a', root, rootOther]);
  const cfgFile = path.join(rootOther, 'backing-images', `${BI}-1f2e3d4c`, 'backing.cfg');
  const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, currentChecksum: 'cd'.repeat(64) }));

  target = path.join(tmp, 'target');
  writeTarget(target);
  targetWithBi = path.join(tmp, 'target-bi');
  biBackupBytes = pattern(341, 4 * MiB);
  writeTarget(targetWithBi, biBackupBytes);
  before = new Map([root, root2, rootOther, target].map((d) => [d, fingerprint(d)]));
}, 120_000);

afterAll(() => {
  for (const mp of mounts) chainfs(['umount', mp]);
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** `chainfs mount SOURCES... MP`; unmounted by the caller (unmount) or afterAll. */
function mount(sources: string[], mp: string): void {
  fs.mkdirSync(mp, { recursive: true });
  const r = chainfs(['mount', ...sources, mp]);
  if (r.code !== 0) throw new Error(`chainfs mount failed (${r.code}): ${r.stderr}`);
  mounts.add(mp);
}
const mounts = new Set<string>();

const backup = (t: string, v = 'vol-root', b = 'b-1') => `${t}?backup=${b}&volume=${v}`;

describe('the effective volume with the backing image from a data root', () => {
  it('cat and export equal the backing image under the blocks, zeros past its end; --no-backing is the blocks over zeros', () => {
    const want = effective(SIZE, rawBytes, blocks);
    expect(rawBytes.length).toBe(6 * MiB + 512); // the image ends inside block 3
    expect(sha256(chainfsOk(['cat', backup(target), root]))).toBe(sha256(want));
    expect(sha256(chainfsOk(['cat', target, root, '--volume', 'vol-root', '--backup', 'b-1']))).toBe(sha256(want));
    const out = path.join(tmp, 'vol-root.raw');
    chainfsOk(['export', backup(target), root, out, '--quiet']);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(want));
    fs.rmSync(out);
    expect(sha256(chainfsOk(['cat', backup(target), root, '--no-backing']))).toBe(sha256(effective(SIZE, undefined, blocks)));
  });

  it('a qcow2 backing image on the data root reads as its virtual content (qemu-img convert)', () => {
    expect(qcowBytes.length).toBe(8 * MiB);
    expect(sha256(chainfsOk(['cat', backup(target, 'vol-q', 'q-1'), root]))).toBe(sha256(effective(12 * MiB, qcowBytes, qBlocks)));
  });

  it('mount TARGET DATAROOT MP serves the effective volumes', () => {
    const mp = path.join(tmp, 'mp');
    mount([target, root], mp);
    try {
      expect(sha256(fs.readFileSync(path.join(mp, 'volumes/vol-root/backups/b-1.img')))).toBe(sha256(effective(SIZE, rawBytes, blocks)));
      expect(sha256(fs.readFileSync(path.join(mp, 'volumes/vol-q/backups/q-1.img')))).toBe(sha256(effective(12 * MiB, qcowBytes, qBlocks)));
      // vol-other's backing image is refused (checksum mismatch): its image cannot be read, the others can.
      expect(() => fs.readFileSync(path.join(mp, 'volumes/vol-other/backups/o-1.img'))).toThrow();
    } finally {
      unmount(mp);
      mounts.delete(mp);
    }
  });

  it('without the data root: one line naming the backing image and the three options', () => {
    const r = chainfs(['cat', backup(target)]);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/volume vol-root has backing image bi-raw-backing, which has no backup in this target; pass --backing-file PATH .*a data root holding backing-images\/bi-raw-backing-<uuid>\/ after the target .*none given.*--no-backing/);
    // a data root that does not hold it
    const r2 = chainfs(['cat', target, root2, '--volume', 'vol-q', '--backup', 'q-1']);
    expect(r2.code).toBe(1);
    expect(r2.stderr, r2.stderr).toMatch(/backing image bi-qcow2-backing.*not on .*disk2/);
  });

  it('inspect says where each volume\'s backing image comes from (text and --json)', () => {
    const text = chainfsOk(['inspect', target, root, root2, '--no-contents']).toString();
    expect(text).toContain(`volume vol-root: backing image ${BI}: from data root ${root}: ${rawFile} (checksum matches volume.cfg; also on ${path.join(root2, 'backing-images', `${BI}-1f2e3d4c`, 'backing')}, none of them with another checksum)`);
    expect(text).toMatch(/volume vol-other: backing image bi-raw-backing: unresolved: .*has checksum/);
    const doc = JSON.parse(chainfsOk(['inspect', target, root, root2, '--json', '--no-contents']).toString()) as {
      volumes: { name: string; backingImageSource: Record<string, unknown> | null }[];
    };
    const src = Object.fromEntries(doc.volumes.map((v) => [v.name, v.backingImageSource]));
    expect(src['vol-root']).toEqual({
      from: 'data-root', file: rawFile, root, checksum: rawSum, checksumMatches: true,
      copies: [rawFile, path.join(root2, 'backing-images', `${BI}-1f2e3d4c`, 'backing')],
    });
    expect(src['vol-q']).toMatchObject({ from: 'data-root', root, copies: [qcowFile()] });
    expect(src['vol-other']).toMatchObject({ from: 'unresolved', problem: expect.stringContaining('ab'.repeat(64)) });
    // the schema in docs/json.md knows every key
    const schema = fs.readFileSync(path.join(__dirname, '..', 'docs', 'json.md'), 'utf8');
    for (const k of Object.keys(src['vol-root']!)) expect(schema).toContain(`"${k}"`);
    // without roots, from the target's own backup; --no-backing
    const doc2 = JSON.parse(chainfsOk(['inspect', targetWithBi, '--json', '--no-contents']).toString()) as typeof doc;
    expect(doc2.volumes.find((v) => v.name === 'vol-root')!.backingImageSource).toEqual({ from: 'target', path: `backing-images/${BI}.img` });
    const doc3 = JSON.parse(chainfsOk(['inspect', targetWithBi, root, '--json', '--no-contents', '--no-backing']).toString()) as typeof doc;
    expect(doc3.volumes.find((v) => v.name === 'vol-root')!.backingImageSource).toEqual({ from: 'no-backing' });
  });
});

describe('checksums and copies', () => {
  it('a copy whose backing.cfg checksum differs from volume.cfg BackingImageChecksum is refused, naming both checksums and files', () => {
    const r = chainfs(['cat', backup(target, 'vol-other', 'o-1'), root]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`${rawFile} has checksum ${rawSum}`);
    expect(r.stderr).toContain(`over checksum ${'ab'.repeat(64)} (BackingImageChecksum in ${path.join(target, volumeDir('vol-other'), 'volume.cfg')})`);
    // and the other way: the volume's checksum is right, the copy's backing.cfg is not
    const r2 = chainfs(['cat', backup(target), rootOther]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`has checksum ${'cd'.repeat(64)}`);
    expect(r2.stderr).toContain(rawSum);
  });

  it('two roots with the same image: the first is used; copies that differ are refused when the volume records no checksum', () => {
    const want = effective(SIZE, rawBytes, blocks);
    expect(sha256(chainfsOk(['cat', backup(target), root, root2]))).toBe(sha256(want));
    expect(sha256(chainfsOk(['cat', backup(target), root2, root]))).toBe(sha256(want));
    const text = chainfsOk(['inspect', target, root2, root, '--no-contents']).toString();
    expect(text).toContain(`from data root ${root2}: ${path.join(root2, 'backing-images', `${BI}-1f2e3d4c`, 'backing')}`);
    // no checksum in volume.cfg: equal copies are fine, differing ones are not
    expect(sha256(chainfsOk(['cat', backup(target, 'vol-nosum', 'n-1'), root, root2])))
      .toBe(sha256(effective(SIZE, rawBytes, new Map([[0, pattern(331, BLOCK)]]))));
    const r = chainfs(['cat', backup(target, 'vol-nosum', 'n-1'), root, rootOther]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the copies on the data roots differ: .* has checksum [0-9a-f]{128}, .*root-other.* has c{1}d/);
  });
});

describe('a copy whose checksum cannot be compared (no backing.cfg)', () => {
  /** A copy of `root` without bi-raw-backing's backing.cfg; `cut` bytes kept of its backing file when given. */
  function rootWithoutCfg(name: string, cut?: number): { dir: string; file: string } {
    const dir = path.join(tmp, name);
    execFileSync('cp', ['-a', root, dir]);
    const bi = path.join(dir, 'backing-images', `${BI}-1f2e3d4c`);
    fs.rmSync(path.join(bi, 'backing.cfg'));
    if (cut !== undefined) fs.truncateSync(path.join(bi, 'backing'), cut);
    return { dir, file: path.join(bi, 'backing') };
  }

  it('the target\'s backup of the image is used instead, and inspect says why the copy was passed over', () => {
    const noCfg = rootWithoutCfg('root-nocfg');
    // a target holding a backup of the same image (same size: the size check passes)
    const targetRaw = path.join(tmp, 'target-raw');
    writeTarget(targetRaw, rawBytes);
    expect(sha256(chainfsOk(['cat', backup(targetRaw), noCfg.dir]))).toBe(sha256(effective(SIZE, rawBytes, blocks)));
    const doc = JSON.parse(chainfsOk(['inspect', targetRaw, noCfg.dir, '--json', '--no-contents']).toString()) as {
      volumes: { name: string; backingImageSource: Record<string, unknown> | null }[];
    };
    expect(doc.volumes.find((v) => v.name === 'vol-root')!.backingImageSource).toEqual({
      from: 'target', path: `backing-images/${BI}.img`,
      notUsed: `${noCfg.file} not used: its checksum cannot be compared (no checksum in its backing.cfg); the target's backup is checked block by block`,
    });
  });

  it('without a backup of it in the target the copy is used, with a warning on every read', () => {
    const noCfg = rootWithoutCfg('root-nocfg2');
    const r = chainfs(['cat', backup(target), noCfg.dir]);
    expect(r.code).toBe(0);
    expect(sha256(r.stdout)).toBe(sha256(effective(SIZE, rawBytes, blocks)));
    expect(r.stderr).toContain(`warning: backing image ${BI}: ${noCfg.file} is used, but its checksum was not compared (no checksum in its backing.cfg) and the target holds no backup of it: check the image`);
  });

  it('a copy cut short is not used when the target\'s backup of the image has another size', () => {
    const short = rootWithoutCfg('root-short', 4096);
    expect(sha256(chainfsOk(['cat', backup(targetWithBi), short.dir]))).toBe(sha256(effective(SIZE, biBackupBytes, blocks)));
    const doc = JSON.parse(chainfsOk(['inspect', targetWithBi, short.dir, '--json', '--no-contents']).toString()) as {
      volumes: { name: string; backingImageSource: Record<string, unknown> | null }[];
    };
    expect(doc.volumes.find((v) => v.name === 'vol-root')!.backingImageSource).toMatchObject({
      from: 'target', notUsed: `${short.file} has 4096 bytes, but the target's backup of backing image ${BI} has ${4 * MiB} (a copy cut short or another image)`,
    });
  });
});

describe('precedence: --backing-file, then a data root, then the target\'s backing-image backup', () => {
  it('--backing-file beats the data root; the data root beats the target\'s own backup', () => {
    const other = path.join(tmp, 'other.raw');
    const otherBytes = pattern(351, 3 * MiB);
    fs.writeFileSync(other, otherBytes);
    expect(sha256(chainfsOk(['cat', backup(targetWithBi), root, '--backing-file', other]))).toBe(sha256(effective(SIZE, otherBytes, blocks)));
    expect(sha256(chainfsOk(['cat', backup(targetWithBi), root]))).toBe(sha256(effective(SIZE, rawBytes, blocks)));
    // without the root, the target's backup (holding other bytes here, so that the source shows)
    expect(sha256(chainfsOk(['cat', backup(targetWithBi)]))).toBe(sha256(effective(SIZE, biBackupBytes, blocks)));
    fs.rmSync(other);
  });

  it('--backing-file naming a directory is refused with the data-root spelling', () => {
    const r = chainfs(['cat', backup(target), '--backing-file', root]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`--backing-file ${root} is a directory; --backing-file takes the image file; a data root goes after the target: chainfs cat TARGET ${root}`);
  });
});

describe('sources are sacred; what mixes are refused', () => {
  it('an export (or a block cache) into the data root is refused', () => {
    for (const out of [path.join(root, 'out.raw'), path.join(root, 'backing-images', 'x.raw')]) {
      const r = chainfs(['export', backup(target), root, out, '--quiet']);
      expect(r.code, out).not.toBe(0);
      expect(r.stderr).toMatch(/source|never written/);
      expect(fs.existsSync(out)).toBe(false);
    }
    const r = chainfs(['cat', backup(target), root, '--cache-dir', path.join(root, 'cache')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/inside the source .*never written/);
  });

  it('only data roots may follow a target, and a target must come first', () => {
    const replica = [...node.replicas.values()][0].dir;
    for (const args of [[target, replica], [target, targetWithBi], [target, path.join(tmp, 'nothing')]]) {
      const r = chainfs(['cat', ...args]);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/after a backup target give only data roots/);
    }
    const r = chainfs(['cat', root, target]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/give sources of one kind at a time \(or the backup target first, then the data roots/);
  });

  it('the data roots and the target are unchanged', () => {
    for (const [d, fp] of before) expect(fingerprint(d), d).toBe(fp);
  });
});

describe('a backup cfg over 256 KiB', () => {
  let big: string;
  const N = 3000; // ~105 bytes per Blocks entry: a ~310 KiB cfg
  beforeAll(() => {
    big = path.join(tmp, 'big');
    const b = new TargetBuilder(big);
    b.volume('vol-big', { size: N * BLOCK, compression: 'lz4' });
    const one = pattern(361, BLOCK);
    const many = new Map<number, Buffer>();
    for (let i = 0; i < N; i++) many.set(i * BLOCK, one);
    b.backup('vol-big', 'clean', { blocks: many });
    b.backup('vol-big', 'bad', { blocks: many });
    // the last entry's offset, not a multiple of the block size: the cfg is damaged past its first 256 KiB
    const f = path.join(big, volumeDir('vol-big'), 'backups', 'backup_bad.cfg');
    const text = fs.readFileSync(f, 'utf8');
    const last = `"Offset":${(N - 1) * BLOCK},`;
    expect(text.lastIndexOf(last)).toBeGreaterThan(256 << 10);
    fs.writeFileSync(f, text.replace(last, `"Offset":${(N - 1) * BLOCK + 1},`));
    expect(fs.statSync(f).size).toBeGreaterThan(256 << 10);
  });

  it('is listed from its head with every field right; its block list is checked when it is opened or verified', () => {
    const doc = JSON.parse(chainfsOk(['inspect', big, '--json', '--no-contents']).toString()) as {
      volumes: { backups: { name: string; state: string; blocks: number; compression: string; newlyUploadedBytes: number; snapshot: string }[] }[];
    };
    const bs = Object.fromEntries(doc.volumes[0].backups.map((b) => [b.name, b]));
    expect(bs.clean).toMatchObject({ state: 'complete', blocks: N, compression: 'lz4', newlyUploadedBytes: 0, snapshot: 'snap-clean' });
    // the documented limit: listed complete, refused when opened
    expect(bs.bad).toMatchObject({ state: 'complete', blocks: N });
    const r = chainfs(['cat', backup(big, 'vol-big', 'bad')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`block offset ${(N - 1) * BLOCK + 1} is not a multiple of the block size`);
    const v = chainfs(['verify', big, '--json']);
    expect(v.code).toBe(1);
    const rep = JSON.parse(v.stdout.toString()) as { backups: { name: string; state: string }[] };
    expect(Object.fromEntries(rep.backups.map((b) => [b.name, b.state]))).toMatchObject({ clean: 'complete', bad: 'damaged' });
    // the clean one reads, to its last block (through a mount: the image is 5.9 GiB)
    const mp = path.join(tmp, 'mp-big');
    mount([`${big}?volume=vol-big`], mp);
    try {
      const fd = fs.openSync(path.join(mp, 'volumes/vol-big/backups/clean.img'), 'r');
      const got = Buffer.alloc(BLOCK);
      expect(fs.readSync(fd, got, 0, BLOCK, (N - 1) * BLOCK)).toBe(BLOCK);
      fs.closeSync(fd);
      expect(sha256(got)).toBe(sha256(pattern(361, BLOCK)));
      // the damaged one is listed (from its head), and its image cannot be read
      expect(() => fs.readFileSync(path.join(mp, 'volumes/vol-big/backups/bad.img'))).toThrow(/EIO|input\/output/i);
    } finally {
      unmount(mp);
      mounts.delete(mp);
    }
  });
});
