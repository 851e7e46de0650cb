/**
 * What is inside a view (issue #14 items 7 and 8), through the real CLI:
 * `inspect` names the file system, label and partition table of each view
 * (blkid -p on its first MiB), and `mount --files` shows the files of
 * ext2/3/4 views under MP/files/<view path>/ by fuse2fs, as root and
 * without a loop device; a partition is found at its offset; another file
 * system gets a warning naming guestmount. Files are compared with the
 * hashes recorded when the fixture was written.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chainfs, chainfsOk } from './helpers/cli';
import { buildExt4Replica, hashTree, type Ext4Replica } from './helpers/ext4-replica';
import { isMounted, mountReplica, unmountAll } from './helpers/mount';
import { encodeDiskMeta, encodeVolumeMeta, writeMetaFile } from './helpers/replica-meta';
import { untilRunning } from './helpers/processes';

const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

const MiB = 1 << 20;
let tmp: string;
let ext4: Ext4Replica;
let parted: string;

/**
 * A one-file replica whose volume has an MBR partition table: partition 1
 * (at 1 MiB) an ext4 labelled "pdata" with one file, partition 2 (at 12
 * MiB) swap. Written with mkfs.ext4 -E offset and mkswap, no loop device.
 */
function buildPartitioned(dir: string): string {
  const size = 16 * MiB;
  const img = path.join(dir, 'parted.raw');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, size);
  const mbr = Buffer.alloc(512);
  const entry = (i: number, type: number, startLba: number, sectors: number) => {
    const at = 446 + 16 * i;
    mbr[at + 4] = type;
    mbr.writeUInt32LE(startLba, at + 8);
    mbr.writeUInt32LE(sectors, at + 12);
  };
  entry(0, 0x83, 2048, 20480); // 1 MiB .. 11 MiB
  entry(1, 0x82, 24576, 8192); // 12 MiB .. 16 MiB
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const fd = fs.openSync(img, 'r+');
  fs.writeSync(fd, mbr, 0, 512, 0);
  fs.closeSync(fd);
  const src = path.join(dir, 'parted-src');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'inside.txt'), 'in partition one\n');
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'pdata', '-b', '4096', '-E', `offset=${MiB}`, '-d', src, img, '10M']);
  // swap in partition 2: mkswap writes its signature at the start of the file it is given
  const swap = path.join(dir, 'swap.raw');
  fs.writeFileSync(swap, Buffer.alloc(4 * MiB));
  execFileSync('mkswap', ['-q', swap]);
  const out = fs.openSync(img, 'r+');
  fs.writeSync(out, fs.readFileSync(swap), 0, 4 * MiB, 12 * MiB);
  fs.closeSync(out);

  const rep = path.join(dir, 'longhorn', 'replicas', 'pvc-parted-0badf00d');
  fs.mkdirSync(rep, { recursive: true });
  fs.renameSync(img, path.join(rep, 'volume-head-000.img'));
  writeMetaFile(path.join(rep, 'volume-head-000.img.meta'), encodeDiskMeta({
    Name: 'volume-head-000.img', Parent: '', Removed: false, UserCreated: false, Created: '2024-05-01T10:00:00Z', Labels: null,
  }));
  writeMetaFile(path.join(rep, 'volume.meta'), encodeVolumeMeta({
    Size: size, Head: 'volume-head-000.img', Dirty: false, Rebuilding: false, Error: '', Parent: '', SectorSize: 512, BackingFilePath: '',
  }));
  return rep;
}

/** Loop devices in use now (their backing files). */
const loops = () => fs.readdirSync('/sys/block').filter((d) => d.startsWith('loop'))
  .map((d) => { try { return fs.readFileSync(`/sys/block/${d}/loop/backing_file`, 'utf8').trim(); } catch { return ''; } })
  .filter(Boolean);

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-op-files-'));
  ext4 = buildExt4Replica(tmp);
  parted = buildPartitioned(fs.mkdtempSync(path.join(tmp, 'parted-')));
}, 60_000);
afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/**
 * A replica whose snapshot is `parted`'s volume and whose head holds one
 * 4 KiB block: partition 1's superblock relabelled "after" (past the first
 * MiB), so the two views share the first MiB but not the partition's label.
 */
function buildRelabelled(dir: string): string {
  const rep = path.join(dir, 'longhorn', 'replicas', 'pvc-relabel-0badf00d');
  fs.mkdirSync(rep, { recursive: true });
  const base = path.join(parted, 'volume-head-000.img');
  const size = fs.statSync(base).size;
  fs.copyFileSync(base, path.join(rep, 'volume-snap-s1.img'));
  const part = path.join(dir, 'p1.raw');
  const all = fs.readFileSync(base);
  fs.writeFileSync(part, all.subarray(MiB, 11 * MiB));
  execFileSync('tune2fs', ['-L', 'after', part], { stdio: 'ignore' });
  const head = path.join(rep, 'volume-head-001.img');
  fs.writeFileSync(head, '');
  fs.truncateSync(head, size);
  const fd = fs.openSync(head, 'r+');
  fs.writeSync(fd, fs.readFileSync(part).subarray(0, 4096), 0, 4096, MiB);
  fs.closeSync(fd);
  const disk = (name: string, parent: string) => encodeDiskMeta({
    Name: name, Parent: parent, Removed: false, UserCreated: true, Created: '2024-05-01T10:00:00Z', Labels: null,
  });
  writeMetaFile(path.join(rep, 'volume-snap-s1.img.meta'), disk('volume-snap-s1.img', ''));
  writeMetaFile(path.join(rep, 'volume-head-001.img.meta'), disk('volume-head-001.img', 'volume-snap-s1.img'));
  writeMetaFile(path.join(rep, 'volume.meta'), encodeVolumeMeta({
    Size: size, Head: 'volume-head-001.img', Dirty: false, Rebuilding: false, Error: '', Parent: 'volume-snap-s1.img', SectorSize: 512, BackingFilePath: '',
  }));
  return rep;
}

describe('inspect: what a view holds', () => {
  it('views with the same first MiB share one probe of it, but each view\'s partitions are its own', () => {
    const rep = buildRelabelled(fs.mkdtempSync(path.join(tmp, 'relabel-')));
    const j = JSON.parse(chainfsOk(['inspect', rep, '--json']).toString());
    const of = (v: string) => (j.contents as Array<{ view: string; ptType: string; partitions: Array<{ number: number; label: string }> }>).find((c) => c.view === v)!;
    expect(of('volume.img').ptType).toBe('dos');
    expect(of('snapshots/s1.img').ptType).toBe('dos');
    expect(of('volume.img').partitions.find((p) => p.number === 1)?.label).toBe('after');
    expect(of('snapshots/s1.img').partitions.find((p) => p.number === 1)?.label).toBe('pdata');
  });

  it('names the file system of each view, and a partition table with its partitions at their offsets', () => {
    const j = JSON.parse(chainfsOk(['inspect', ext4.dir, '--json']).toString());
    const uuid = execFileSync('blkid', ['-p', '-o', 'value', '-s', 'UUID', path.join(path.dirname(path.dirname(ext4.dir)), 'backing-images', 'bi-ext4-0badcafe', 'backing')], { encoding: 'utf8' }).trim();
    expect(j.contents).toEqual([
      { view: 'volume.img', ptType: null, partitions: [], type: 'ext4', label: null, uuid },
      { view: 'snapshots/before-upgrade.img', ptType: null, partitions: [], type: 'ext4', label: null, uuid },
    ]);
    const p = JSON.parse(chainfsOk(['inspect', parted, '--json']).toString());
    expect(p.contents).toHaveLength(1);
    expect(p.contents[0]).toMatchObject({ view: 'volume.img', ptType: 'dos', type: null });
    expect(p.contents[0].partitions).toEqual([
      expect.objectContaining({ number: 1, offset: MiB, size: 10 * MiB, type: 'ext4', label: 'pdata' }),
      expect.objectContaining({ number: 2, offset: 12 * MiB, size: 4 * MiB, type: 'swap' }),
    ]);
    const text = chainfsOk(['inspect', parted]).toString();
    expect(text).toMatch(/contents \(blkid -p on the first MiB\):\n +VIEW +HOLDS\n +volume\.img +dos partition table: 1: ext4 "pdata" \(uuid [-0-9a-f]+\) at 1\.0 MiB; 2: swap .*at 12\.0 MiB/);
    expect(chainfsOk(['inspect', parted, '--no-contents']).toString()).not.toMatch(/contents/);
  });
});

describe('mount --files', () => {
  it('shows the files of every ext4 view under MP/files/<view path>/, read-only, with no loop device', () => {
    const mp = path.join(tmp, 'mp-ext4');
    const loopsBefore = loops();
    mountReplica(ext4.dir, mp, ['--files']);
    expect(hashTree(path.join(mp, 'files', 'volume.img'))).toEqual(ext4.headFiles);
    expect(hashTree(path.join(mp, 'files', 'snapshots', `${ext4.snapshot}.img`))).toEqual(ext4.snapshotFiles);
    expect(loops()).toEqual(loopsBefore);
    // read-only: nothing can be written through it
    expect(() => fs.writeFileSync(path.join(mp, 'files', 'volume.img', 'small.txt'), 'x')).toThrow(/EROFS|EACCES|EPERM/);
    // the image files are where they always are
    expect(fs.statSync(path.join(mp, 'volume.img')).size).toBe(64 * MiB);
    chainfsOk(['umount', mp]);
    expect(isMounted(mp)).toBe(false);
    expect(isMounted(path.join(mp, 'files', 'volume.img'))).toBe(false);
  });

  it('finds a partition at its offset and names guestmount for a file system it does not show', () => {
    const mp = path.join(tmp, 'mp-parted');
    fs.mkdirSync(mp);
    const r = chainfs(['mount', parted, mp, '--files']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: volume\.img partition 2 holds swap, not ext2\/3\/4: --files does not show it; .*guestmount --ro -a .*volume\.img/);
    try {
      expect(fs.readFileSync(path.join(mp, 'files', 'volume.img', 'p1', 'inside.txt'), 'utf8')).toBe('in partition one\n');
      expect(fs.existsSync(path.join(mp, 'files', 'volume.img', 'p2'))).toBe(false);
    } finally {
      chainfsOk(['umount', mp]);
    }
    expect(isMounted(mp)).toBe(false);
    expect(chainfs(['mount', '--help']).stdout.toString()).toMatch(/--files[\s\S]*guestmount/);
  });

  it('no ext2/3/4 view: one warning, and no files/ directory (the warning does not promise one)', () => {
    const rep = path.join(tmp, 'longhorn', 'replicas', 'pvc-blank-0b1a4c00');
    fs.mkdirSync(rep, { recursive: true });
    fs.writeFileSync(path.join(rep, 'volume-head-000.img'), '');
    fs.truncateSync(path.join(rep, 'volume-head-000.img'), 4 * MiB);
    writeMetaFile(path.join(rep, 'volume-head-000.img.meta'), encodeDiskMeta({
      Name: 'volume-head-000.img', Parent: '', Removed: false, UserCreated: false, Created: '2024-05-01T10:00:00Z', Labels: null,
    }));
    writeMetaFile(path.join(rep, 'volume.meta'), encodeVolumeMeta({
      Size: 4 * MiB, Head: 'volume-head-000.img', Dirty: false, Rebuilding: false, Error: '', Parent: '', SectorSize: 512, BackingFilePath: '',
    }));
    const mp = path.join(tmp, 'mp-blank');
    fs.mkdirSync(mp);
    const r = chainfs(['mount', rep, mp, '--files']);
    expect(r.code, r.stderr).toBe(0);
    try {
      expect(r.stderr.trim().split('\n')).toEqual(['chainfs: warning: --files: no ext2/3/4 file system found in the views; no files/ directory']);
      expect(fs.existsSync(path.join(mp, 'files'))).toBe(false);
    } finally {
      chainfsOk(['umount', mp]);
    }
  });

  it('a busy files/ mount makes umount name the holder; released, umount takes both down', async () => {
    const mp = path.join(tmp, 'mp-busy');
    mountReplica(ext4.dir, mp, ['--files']);
    const inside = path.join(mp, 'files', 'volume.img', 'etc', 'hostname');
    const fd = fs.openSync(inside, 'r');
    const child = spawn('sleep', ['60'], { stdio: [fd, 'ignore', 'ignore'] });
    fs.closeSync(fd); // only the child holds it
    await untilRunning(child.pid, 'sleep');
    try {
      const r = chainfs(['umount', mp]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`process ${child.pid} (sleep) has ${inside} open`);
      expect(r.stderr).not.toMatch(/fuse2fs/); // the mount's own file mounts are not what holds it
      expect(isMounted(mp)).toBe(true);
      // refused before anything was taken down: every files/ mount is still there
      expect(isMounted(path.join(mp, 'files', 'volume.img'))).toBe(true);
      expect(isMounted(path.join(mp, 'files', 'snapshots', `${ext4.snapshot}.img`))).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
    return new Promise<void>((resolve) => child.once('exit', () => {
      chainfsOk(['umount', mp]);
      expect(isMounted(mp)).toBe(false);
      resolve();
    }));
  });
});
