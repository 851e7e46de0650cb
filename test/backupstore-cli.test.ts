/**
 * The real CLI (bin/chainfs, its own process) on backup targets: inspect,
 * cat, export (raw, qcow2, Longhorn layout), verify's exit codes and JSON,
 * --bad-blocks zero, a real FUSE mount (every image equal to its oracle,
 * catalog.json, qemu-img info, a block vanishing under the mount gives EIO
 * for that block only), and S3 through s3rver. Targets are unchanged.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BLOCK, blockPath, buildSampleTarget, checksum, damageSampleTarget, fingerprint, pattern, volumeDir, type SampleTarget,
} from './helpers/backupstore-builder';
import { extractFixture, fixtureManifest, sha256 } from './helpers/backupstore-read';
import { s3Env, startListingServer, startS3rver, uploadDir, type S3Server } from './helpers/backupstore-s3';
import { CHAINFS, chainfs, chainfsOk } from './helpers/cli';
import { mountReplica, unmount, unmountAll } from './helpers/mount';

let tmp: string;
let sample: SampleTarget;
let damaged: string;
let gt: string;
const manifest = fixtureManifest();
const live = manifest.backups.filter((b) => b.status === 'live');

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-cli-'));
  sample = buildSampleTarget(path.join(tmp, 'sample'));
  damaged = path.join(tmp, 'damaged');
  buildSampleTarget(damaged);
  damageSampleTarget(damaged);
  gt = extractFixture(fs.mkdtempSync(path.join(tmp, 'gt-')));
});

afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('inspect, cat, export', () => {
  it('inspect lists volumes, backups and their states; --json too', () => {
    const text = chainfsOk(['inspect', sample.dir]).toString();
    expect(text).toMatch(/volume vol-gzip .*compression gzip/);
    expect(text).toMatch(/g-running .*in progress or failed/);
    expect(text).toMatch(/bi-base .*complete/);
    const rep = JSON.parse(chainfsOk(['inspect', sample.dir, '--json']).toString()) as { volumes: { name: string }[] };
    expect(rep.volumes.map((v) => v.name)).toEqual(['vol-gzip', 'vol-lz4', 'vol-none']);
  });

  it('cat of every engine-written backup equals the manifest (backup URL, and --volume/--backup)', () => {
    const before = fingerprint(gt);
    for (const b of live) {
      expect(sha256(chainfsOk(['cat', `vfs://${gt}?backup=${b.name}&volume=vol-lz4`])), b.name).toBe(b.sha256);
    }
    expect(sha256(chainfsOk(['cat', gt, '--volume', 'vol-lz4', '--backup', live[0].name]))).toBe(live[0].sha256);
    expect(fingerprint(gt)).toBe(before);
  });

  it('export raw and qcow2 of every engine-written backup equal the manifest', () => {
    for (const b of live) {
      const raw = path.join(tmp, `${b.name}.raw`);
      chainfsOk(['export', `${gt}?backup=${b.name}&volume=vol-lz4`, raw, '--quiet']);
      expect(sha256(fs.readFileSync(raw)), b.name).toBe(b.sha256);
      fs.rmSync(raw);
    }
    const q = path.join(tmp, 'b.qcow2');
    chainfsOk(['export', gt, '--volume', 'vol-lz4', '--backup', live[1].name, '--format', 'qcow2', q, '--quiet']);
    const back = path.join(tmp, 'b.back.raw');
    spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', q, back]);
    expect(sha256(fs.readFileSync(back))).toBe(live[1].sha256);
  });

  it('export --layout longhorn of a backup: the volume with its backing image underneath', () => {
    const out = path.join(tmp, 'n1-bi-0123abcd');
    const r = chainfsOk(['export', sample.dir, '--volume', 'vol-none', '--backup', 'n-1', '--layout', 'longhorn', out, '--quiet']).toString();
    const img = sample.expected.get('volumes/vol-none/backups/n-1.img')!;
    expect(sha256(fs.readFileSync(path.join(out, 'backing')))).toBe(sha256(img));
    expect(r).toContain(require('node:crypto').createHash('sha512').update(img).digest('hex'));
  });

  it('--no-backing and the backing image view', () => {
    expect(sha256(chainfsOk(['cat', sample.dir, '--volume', 'vol-none', '--no-backing'])))
      .toBe(sha256(sample.expectedNoBacking.get('volumes/vol-none/backups/n-1.img')!));
    expect(sha256(chainfsOk(['cat', `${sample.dir}?backingImage=bi-base`]))).toBe(sha256(sample.backingImage.data));
  });

  it('an in-progress backup is refused in one line; so is an nfs:// target', () => {
    const r = chainfs(['cat', sample.dir, '--volume', 'vol-gzip', '--backup', 'g-running']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/g-running .*in progress or failed/);
    const n = chainfs(['inspect', 'nfs://server:/export']);
    expect(n.code).toBe(1);
    expect(n.stderr).toMatch(/mount the share/);
  });
});

describe('a backup URL chainfs would not read as asked', () => {
  it('an unknown or repeated parameter, or an option naming another volume or backup than the URL: refused in one line (was: the last backup, silently)', () => {
    const url = (q: string) => `${gt}?${q}`;
    for (const [args, re] of [
      [['cat', url(`backups=${live[0].name}&volume=vol-lz4`)], /unknown backup-URL parameter "backups" \(Longhorn's are volume, backup, backingImage\)/],
      [['cat', url('volume=vol-lz4&volume=vol-lz4')], /backup-URL parameter "volume" is given twice/],
      [['cat', url(`backup=${live[0].name}&volume=vol-lz4`), '--backup', live[1].name], new RegExp(`the URL selects backup=${live[0].name} and --backup says ${live[1].name}: give one of them`)],
      [['export', url(`backup=${live[0].name}&volume=vol-lz4`), path.join(tmp, 'never.raw'), '--backup', live[1].name], /the URL selects backup=/],
      [['inspect', url('volume=vol-lz4'), '--volume', 'other'], /the URL selects volume=vol-lz4 and --volume says other/],
      [['mount', url('volume=vol-lz4'), path.join(tmp, 'never-mp'), '--volume', 'other'], /the URL selects volume=vol-lz4 and --volume says other/],
    ] as const) {
      if (args[0] === 'mount') fs.mkdirSync(args[2], { recursive: true });
      const r = chainfs([...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
    const v = chainfs(['verify', url(`backup=${live[0].name}&volume=vol-lz4`), '--backup', live[1].name]);
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(/the URL selects backup=/);
    expect(fs.existsSync(path.join(tmp, 'never.raw'))).toBe(false);
    // the same name twice is no conflict; diff --from names the older backup beside the URL's
    expect(sha256(chainfsOk(['cat', url(`backup=${live[0].name}&volume=vol-lz4`), '--backup', live[0].name]))).toBe(live[0].sha256);
    // verify too: --volume naming the URL's volume again still checks the URL's backup only (it checked them all)
    const one = JSON.parse(String(chainfsOk(['verify', url(`backup=${live[0].name}&volume=vol-lz4`), '--volume', 'vol-lz4', '--json'])));
    expect(one.backups.map((b: { name: string }) => b.name)).toEqual([live[0].name]);
    expect(chainfs(['diff', url(`backup=${live[1].name}&volume=vol-lz4`), '--from', live[0].name]).code).toBe(1);
  });
});

describe('bad blocks', () => {
  it('cat fails on a bad block with one line naming its offset and checksum', () => {
    const r = chainfs(['cat', damaged, '--volume', 'vol-gzip', '--backup', 'g-full']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`block at offset ${3 * BLOCK} (checksum ${checksum(pattern(3, BLOCK))})`);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('--bad-blocks zero recovers the rest and reports the block', () => {
    const r = chainfs(['cat', damaged, '--volume', 'vol-gzip', '--backup', 'g-full', '--bad-blocks', 'zero']);
    expect(r.code).toBe(0);
    const want = Buffer.from(sample.expected.get('volumes/vol-gzip/backups/g-full.img')!);
    want.fill(0, 3 * BLOCK, 4 * BLOCK);
    expect(sha256(r.stdout)).toBe(sha256(want));
    expect(r.stderr).toMatch(new RegExp(`bad block at offset ${3 * BLOCK} .*served as zeros`));
  });
});

describe('verify', () => {
  it('clean target: exit 0, garbage counted', () => {
    const r = chainfs(['verify', sample.dir, '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout.toString()) as { backups: { state: string }[]; unreferencedBlocks: number };
    expect(j.unreferencedBlocks).toBe(sample.orphans);
    expect(j.backups.filter((b) => b.state === 'in progress or failed')).toHaveLength(1);
    expect(chainfs(['verify', gt]).code).toBe(0);
  });

  it('damaged target: exit 1, each bad block with its backups; one clean backup: exit 0; trouble: exit 2', () => {
    const before = fingerprint(damaged);
    const r = chainfs(['verify', damaged, '--json', '--jobs', '2']);
    expect(r.code).toBe(1);
    const j = JSON.parse(r.stdout.toString()) as { backups: { volume: string; name: string; state: string; badBlocks: { offset: number; checksum: string; problem: string }[] }[] };
    const gfull = j.backups.find((b) => b.name === 'g-full')!;
    expect(gfull.state).toBe('damaged');
    expect(gfull.badBlocks).toMatchObject([{ offset: 3 * BLOCK, checksum: checksum(pattern(3, BLOCK)), problem: 'corrupt' }]);
    const text = chainfs(['verify', damaged]).stdout.toString();
    expect(text).toMatch(/DAMAGED +vol-lz4\/l-after-expand: 1 of 4 blocks bad/);
    expect(chainfs(['verify', damaged, '--volume', 'vol-lz4', '--backup', 'l-before-expand']).code).toBe(0);
    expect(chainfs(['verify', path.join(tmp, 'nothing-here')]).code).toBe(2);
    expect(fingerprint(damaged)).toBe(before);
  });

  it('a volume or backup name the target does not hold: exit 2, the line lists what it holds (as cat and export do)', () => {
    const backup = chainfs(['verify', gt, '--backup', 'nope']);
    expect(backup.code).toBe(2);
    expect(backup.stderr.toString()).toMatch(/: no backup named nope \(there are: backup-lz4-01, backup-lz4-03, backup-lz4-04-fullmode\)\n$/);
    const volume = chainfs(['verify', gt, '--volume', 'nope']);
    expect(volume.code).toBe(2);
    expect(volume.stderr.toString()).toMatch(/: no volume named nope \(there is: vol-lz4\)\n$/);
  });
});

describe('mount', () => {
  it('serves every backup, the backing image and catalog.json; qemu-img reads them; a vanished block is EIO for its range only', () => {
    const copy = path.join(tmp, 'mounted');
    fs.cpSync(sample.dir, copy, { recursive: true });
    const mp = path.join(tmp, 'mp');
    mountReplica(copy, mp);
    try {
      const files = fs.readdirSync(mp, { recursive: true }).map(String).filter((f) => f.endsWith('.img')).sort();
      expect(files).toEqual([...sample.expected.keys()].sort());
      // Vanish a block not read yet, then read everything else.
      const gone = blockPath(path.join(copy, volumeDir('vol-gzip'), 'blocks'), checksum(pattern(7, BLOCK)));
      fs.rmSync(gone);
      for (const [p, img] of sample.expected) {
        if (p.endsWith('g-incr.img')) continue;
        expect(sha256(fs.readFileSync(path.join(mp, p))), p).toBe(sha256(img));
      }
      const fd = fs.openSync(path.join(mp, 'volumes/vol-gzip/backups/g-incr.img'), 'r');
      try {
        const buf = Buffer.alloc(65536);
        expect(() => fs.readSync(fd, buf, 0, buf.length, 7 * BLOCK + 65536)).toThrow(/EIO/);
        fs.readSync(fd, buf, 0, buf.length, 6 * BLOCK);
        expect(buf.every((x) => x === 0)).toBe(true);
        fs.readSync(fd, buf, 0, buf.length, 2 * BLOCK);
        expect(buf.equals(pattern(20, BLOCK).subarray(0, 65536))).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
      const cat = JSON.parse(fs.readFileSync(path.join(mp, 'catalog.json'), 'utf8')) as { kind: string };
      expect(cat.kind).toBe('backupstore');
      const info = spawnSync('qemu-img', ['info', '--output=json', path.join(mp, 'volumes/vol-lz4/backups/l-before-expand.img')], { encoding: 'utf8' });
      expect(JSON.parse(info.stdout)['virtual-size']).toBe(16 << 20);
    } finally {
      unmount(mp);
    }
  });

  it('the engine-written target mounted: every backup equals the manifest', () => {
    const mp = path.join(tmp, 'mp-gt');
    const before = fingerprint(gt);
    mountReplica(gt, mp);
    try {
      for (const b of live) expect(sha256(fs.readFileSync(path.join(mp, `volumes/vol-lz4/backups/${b.name}.img`))), b.name).toBe(b.sha256);
    } finally {
      unmount(mp);
    }
    expect(fingerprint(gt)).toBe(before);
  });

  it('--cache-mb 4096 and -o cache_mb=2048 keep more decompressed blocks than the default, not fewer (MiB << 20 wrapped to 0 and negative)', () => {
    const b = live.find((x) => x.name === 'backup-lz4-03')!;
    for (const opt of [['--cache-mb', '4096'], ['-o', 'cache_mb=2048']]) {
      const copy = extractFixture(fs.mkdtempSync(path.join(tmp, 'gt-cache-')));
      const mp = path.join(copy, '..', `mp-${path.basename(copy)}`);
      mountReplica(copy, mp, opt);
      try {
        // O_DIRECT: every read reaches the daemon, past the kernel's page cache of the mount
        const read = () => spawnSync('dd', [`if=${path.join(mp, `volumes/vol-lz4/backups/${b.name}.img`)}`, 'iflag=direct', 'bs=1M', 'status=none'],
          { maxBuffer: 1 << 30 });
        expect(sha256(read().stdout)).toBe(b.sha256);
        // the blocks gone from the target: the second read is served from the daemon's memory
        fs.renameSync(path.join(copy, 'backupstore'), path.join(copy, 'gone'));
        const again = read();
        expect(again.status, `${opt.join(' ')}: ${String(again.stderr)}`).toBe(0);
        expect(sha256(again.stdout)).toBe(b.sha256);
      } finally {
        unmount(mp);
      }
    }
    const r = chainfs(['mount', gt, path.join(tmp, 'mp-never'), '--cache-mb', '2000000']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--cache-mb .* up to 1048576 \(1 TiB\), got "2000000"/);
  });
});

describe('a slow S3 object does not hold up the mount', () => {
  it('while one block takes 3 s to download, other reads of the mount are served at once', async () => {
    const slow = checksum(pattern(7, BLOCK));
    const lister = await startListingServer(sample.dir, 'lh-backups', 1000, (key) => (key.includes(slow) ? 3000 : 0));
    const env = { ...process.env, ...s3Env(lister.endpoint) };
    const mp = path.join(tmp, 'mp-slow');
    fs.mkdirSync(mp, { recursive: true });
    // The daemon lists this process's server: mount without blocking our event loop.
    const code = await new Promise<number | null>((resolve) => {
      spawn(CHAINFS, ['mount', 's3://lh-backups@us-east-1/', mp], { env, stdio: 'ignore' }).on('exit', resolve);
    });
    expect(code).toBe(0);
    try {
      const img = path.join(mp, 'volumes/vol-gzip/backups/g-incr.img');
      const t0 = Date.now();
      const slowRead = (async () => {
        const fh = await fs.promises.open(img, 'r');
        try {
          const buf = Buffer.alloc(65536);
          await fh.read(buf, 0, buf.length, 7 * BLOCK);
          return { at: Date.now() - t0, ok: buf.equals(pattern(7, BLOCK).subarray(0, 65536)) };
        } finally {
          await fh.close();
        }
      })();
      await new Promise((r) => setTimeout(r, 300));
      const other = await fs.promises.readFile(path.join(mp, 'volumes/vol-lz4/backups/l-after-expand.img'));
      const otherAt = Date.now() - t0;
      expect(sha256(other)).toBe(sha256(sample.expected.get('volumes/vol-lz4/backups/l-after-expand.img')!));
      const s = await slowRead;
      expect(s.ok).toBe(true);
      expect(s.at).toBeGreaterThanOrEqual(2900);
      expect(otherAt).toBeLessThan(s.at - 1000);
    } finally {
      await new Promise((resolve) => spawn(CHAINFS, ['umount', mp], { stdio: 'ignore' }).on('exit', resolve));
      spawnSync('fusermount', ['-uz', mp]);
      await lister.close();
    }
  });
});

describe('S3 through the CLI (s3rver on 127.0.0.1)', () => {
  let s3: S3Server | undefined;
  afterAll(async () => {
    await s3?.stop();
  });

  it('cat, export and verify of the engine-written target through s3://', async () => {
    s3 = await startS3rver(path.join(tmp, 's3rver-cli'), 'lh-backups');
    await uploadDir(s3.endpoint, 'lh-backups', gt, 'gt/');
    const env = { ...process.env, ...s3Env(s3.endpoint) };
    const url = (b: string) => `s3://lh-backups@us-east-1/gt/?backup=${b}&volume=vol-lz4`;
    expect(sha256(chainfsOk(['cat', url(live[0].name)], { env }))).toBe(live[0].sha256);
    const raw = path.join(tmp, 's3.raw');
    chainfsOk(['export', url(live[2].name), raw, '--quiet'], { env });
    expect(sha256(fs.readFileSync(raw))).toBe(live[2].sha256);
    const v = chainfs(['verify', 's3://lh-backups@us-east-1/gt/?volume=vol-lz4'], { env });
    expect(v.code).toBe(0);
  });
});
