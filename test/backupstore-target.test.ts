/**
 * Backup-target semantics on targets written by the fixture builder
 * (helpers/backupstore-builder.ts), read through the catalog and the layer
 * directly: every view byte for byte, the effective volume over a backing
 * image and --no-backing, expansion, in-progress cfgs, the gzip/lz4
 * fallback, bad blocks (fail, or zeros and a report), verify's findings,
 * and the target left unchanged.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBackupCfg, parseBlockSize, parseBlocks, parseVolumeCfg } from '../src/source/backupstore/cfg';
import { BlockStore } from '../src/source/backupstore/block-store';
import { DirTarget } from '../src/source/backupstore/dir-target';
import { clientConfig } from '../src/source/backupstore/s3-target';
import { parseTargetArg } from '../src/source/backupstore/url';
import { verifyTarget } from '../src/source/backupstore/verify';
import {
  BLOCK, MiB, TargetBuilder, buildSampleTarget, checksum, compress, damageSampleTarget, fingerprint, pattern, volumeDir,
  type SampleTarget,
} from './helpers/backupstore-builder';
import { extractFixture, open, readView, sha256 } from './helpers/backupstore-read';

let tmp: string;
let sample: SampleTarget;
let damagedDir: string;
let gt: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-'));
  sample = buildSampleTarget(path.join(tmp, 'sample'));
  damagedDir = path.join(tmp, 'damaged');
  buildSampleTarget(damagedDir);
  gt = extractFixture(fs.mkdtempSync(path.join(tmp, 'gt-')));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the fixture builder writes what Longhorn writes', () => {
  it('same cfg fields, order and encodings as the engine-written target', () => {
    const gtVol = path.join(gt, volumeDir('vol-lz4'));
    const ours = path.join(sample.dir, volumeDir('vol-lz4'));
    expect(fs.existsSync(gtVol)).toBe(true); // volumes/19/25/vol-lz4: the same sha512 path rule
    const keys = (f: string) => Object.keys(JSON.parse(fs.readFileSync(f, 'utf8')));
    expect(keys(path.join(ours, 'volume.cfg'))).toEqual(keys(path.join(gtVol, 'volume.cfg')));
    const gtCfg = JSON.parse(fs.readFileSync(path.join(gtVol, 'volume.cfg'), 'utf8'));
    const ourCfg = JSON.parse(fs.readFileSync(path.join(ours, 'volume.cfg'), 'utf8'));
    for (const k of ['CompressionMethod', 'BackingImageName', 'DataEngine']) expect(ourCfg[k].startsWith('"'), k).toBe(gtCfg[k].startsWith('"'));
    const gtBackup = keys(path.join(gtVol, 'backups', 'backup_backup-lz4-01.cfg')).filter((k) => k !== 'Parameters');
    expect(keys(path.join(ours, 'backups', 'backup_l-after-expand.cfg')).filter((k) => k !== 'Parameters')).toEqual(gtBackup);
  });

  it('lz4 blocks carry the same frame header (FLG 0x64, BD 0x70) as pierrec/lz4 wrote', () => {
    const gtBlocks = fs.readdirSync(gt, { recursive: true }).map(String).filter((f) => f.endsWith('.blk'));
    const gtHead = fs.readFileSync(path.join(gt, gtBlocks[0])).subarray(0, 6).toString('hex');
    const ours = compress(pattern(1, BLOCK), 'lz4').subarray(0, 6).toString('hex');
    expect(gtHead).toBe('04224d186470');
    expect(ours).toBe(gtHead);
    // The zero block's name, as the format document records it.
    expect(checksum(Buffer.alloc(BLOCK))).toBe('731859029215873fdac1c9f2f8bd25a334abf0f3a9e1b057cf2cacc2826d86b0');
  });
});

describe('sample target', () => {
  it('every complete backup and the backing image read byte for byte; in-progress is listed, not served', async () => {
    const before = fingerprint(sample.dir);
    const cat = await open(sample.dir);
    try {
      const served = cat.views().filter((v) => !v.problem).map((v) => v.path).sort();
      expect(served).toEqual([...sample.expected.keys()].sort());
      for (const [p, img] of sample.expected) {
        const got = await readView(cat, p, 160 << 10);
        expect(got.sha256, p).toBe(sha256(img));
      }
      const running = cat.view('volumes/vol-gzip/backups/g-running.img')!;
      expect(running.problem).toMatch(/in progress or failed/);
      await expect(running.open({})).rejects.toThrow(/in progress or failed/);
      const rep = JSON.parse(cat.files()[0].content().toString()) as { volumes: { name: string; backups: { name: string; state: string }[] }[] };
      const g = rep.volumes.find((v) => v.name === 'vol-gzip')!;
      expect(g.backups.find((b) => b.name === 'g-running')!.state).toBe('in progress or failed');
      expect(cat.render()).toMatch(/g-running .*in progress or failed/);
    } finally {
      cat.close();
    }
    expect(fingerprint(sample.dir)).toBe(before);
  });

  it('an old backup of an expanded volume reads the current size, zeros above its own', async () => {
    const cat = await open(sample.dir);
    try {
      const v = cat.view('volumes/vol-lz4/backups/l-before-expand.img')!;
      expect(v.size).toBe(16 * MiB);
      const { data } = await readView(cat, v.path);
      expect(data.subarray(8 * MiB).every((x) => x === 0)).toBe(true);
    } finally {
      cat.close();
    }
  });

  it('a block shared by offsets and backups is fetched once', async () => {
    const cat = await open(sample.dir);
    try {
      await readView(cat, 'volumes/vol-lz4/backups/l-before-expand.img');
      expect(cat.store.stats.fetched).toBe(2); // offsets 0 and 4 MiB share one .blk
      await readView(cat, 'volumes/vol-lz4/backups/l-after-expand.img');
      expect(cat.store.stats.fetched).toBe(3); // only the new block
    } finally {
      cat.close();
    }
  });

  it('--no-backing gives the blocks over zeros; a missing backing image is a clear error; --backing-file stands in', async () => {
    const p = 'volumes/vol-none/backups/n-1.img';
    let cat = await open(sample.dir, { noBacking: true });
    try {
      expect((await readView(cat, p)).sha256).toBe(sha256(sample.expectedNoBacking.get(p)!));
    } finally {
      cat.close();
    }
    const noBi = path.join(tmp, 'no-bi');
    fs.cpSync(sample.dir, noBi, { recursive: true });
    fs.rmSync(path.join(noBi, 'backupstore', 'backing-images'), { recursive: true });
    cat = await open(noBi);
    try {
      await expect(cat.view(p)!.open({})).rejects.toThrow(/backing image bi-base, which has no backup in this target; pass --backing-file PATH .*--no-backing/);
    } finally {
      cat.close();
    }
    const biFile = path.join(tmp, 'bi-base.raw');
    const padded = Buffer.concat([sample.backingImage.data, Buffer.alloc(0)]);
    fs.writeFileSync(biFile, padded);
    cat = await open(noBi, { backingFile: biFile });
    try {
      expect((await readView(cat, p)).sha256).toBe(sha256(sample.expected.get(p)!));
    } finally {
      cat.close();
    }
  });

  it('verify: clean, with the in-progress cfg and the garbage counted', async () => {
    const cat = await open(sample.dir);
    try {
      const r = await verifyTarget(cat, {});
      expect(r.damaged).toBe(false);
      expect(r.badObjects).toEqual([]);
      expect(r.unreferencedBlocks).toBe(sample.orphans);
      const states = Object.fromEntries(r.backups.map((b) => [`${b.volume ?? 'bi'}/${b.name}`, b.state]));
      expect(states).toEqual({
        'vol-gzip/g-full': 'complete', 'vol-gzip/g-incr': 'complete', 'vol-gzip/g-running': 'in progress or failed',
        'vol-lz4/l-before-expand': 'complete', 'vol-lz4/l-after-expand': 'complete', 'vol-none/n-1': 'complete', 'bi/bi-base': 'complete',
      });
    } finally {
      cat.close();
    }
  });
});

describe('on-disk cache (--cache-dir)', () => {
  it('a second catalog reads blocks from the cache, checks them, and refetches a damaged cache file', async () => {
    const copy = path.join(tmp, 'cached-target');
    fs.cpSync(sample.dir, copy, { recursive: true });
    const cacheDir = path.join(tmp, 'block-cache');
    const p = 'volumes/vol-lz4/backups/l-after-expand.img';
    let cat = await open(copy, { cacheDir });
    try {
      expect((await readView(cat, p)).sha256).toBe(sha256(sample.expected.get(p)!));
    } finally {
      cat.close();
    }
    await new Promise((r) => setTimeout(r, 200)); // the cache is written behind the reads
    const cached = fs.readdirSync(cacheDir, { recursive: true }).map(String).filter((f) => f.endsWith('.2097152'));
    expect(cached).toHaveLength(3);
    // One cache file damaged, one target block gone: the first is refetched, the second comes from the cache.
    const sum8 = checksum(pattern(8, BLOCK));
    fs.rmSync(path.join(copy, volumeDir('vol-lz4'), 'blocks', sum8.slice(0, 2), sum8.slice(2, 4), `${sum8}.blk`));
    const sum6 = checksum(pattern(6, BLOCK));
    const f6 = path.join(cacheDir, sum6.slice(0, 2), `${sum6}.2097152`);
    const bytes = fs.readFileSync(f6);
    bytes[100] ^= 1;
    fs.writeFileSync(f6, bytes);
    cat = await open(copy, { cacheDir });
    try {
      expect((await readView(cat, p)).sha256).toBe(sha256(sample.expected.get(p)!));
      expect(cat.store.stats.diskHits).toBe(2);
      expect(cat.store.stats.fetched).toBe(1);
    } finally {
      cat.close();
    }
  });
});

describe('an unreadable cfg', () => {
  it('is listed with its problem, and verify calls the target damaged', async () => {
    const dir = path.join(tmp, 'bad-cfg');
    fs.cpSync(sample.dir, dir, { recursive: true });
    fs.writeFileSync(path.join(dir, volumeDir('vol-lz4'), 'backups', 'backup_l-before-expand.cfg'), '{"Name": "l-before-expand", trunc');
    const cat = await open(dir);
    try {
      const v = cat.view('volumes/vol-lz4/backups/l-before-expand.img')!;
      expect(v.problem).toMatch(/backup_l-before-expand.cfg: not a Longhorn backup config: invalid JSON/);
      const r = await verifyTarget(cat, {});
      expect(r.damaged).toBe(true);
      expect(r.backups.find((b) => b.name === 'l-before-expand')!.state).toBe('unreadable');
      expect((await readView(cat, 'volumes/vol-lz4/backups/l-after-expand.img')).sha256).toBe(sha256(sample.expected.get('volumes/vol-lz4/backups/l-after-expand.img')!));
    } finally {
      cat.close();
    }
  });
});

describe('on-disk cache bound', () => {
  it('keeps the most recently used blocks within its bound', async () => {
    const cacheDir = path.join(tmp, 'bounded-cache');
    const target = new DirTarget(sample.dir, sample.dir);
    const store = new BlockStore(target, { jobs: 2, cacheBytes: 4 << 20, cacheDir, cacheDirBytes: 5 << 20 });
    const pool = `backupstore/volumes/${volumeDir('vol-gzip').split(path.sep).slice(2).join('/')}/blocks/`;
    const seeds = [1, 2, 3, 7];
    for (const seed of seeds) {
      const sum = checksum(pattern(seed, BLOCK));
      const plain = await store.get({ key: `${pool}${sum.slice(0, 2)}/${sum.slice(2, 4)}/${sum}.blk`, checksum: sum, compression: 'gzip', blockSize: BLOCK, exact: true });
      expect(plain.equals(pattern(seed, BLOCK))).toBe(true);
      await new Promise((r) => setTimeout(r, 100)); // written behind
    }
    const files = fs.readdirSync(cacheDir, { recursive: true }).map(String).filter((f) => f.endsWith(`.${BLOCK}`));
    expect(files.map((f) => path.basename(f)).sort()).toEqual([3, 7].map((x) => `${checksum(pattern(x, BLOCK))}.${BLOCK}`).sort());
    store.close();
  });
});

describe('damaged target', () => {
  it('verify names every bad block, its problem and every backup it breaks; the target is unchanged', async () => {
    const damage = damageSampleTarget(damagedDir);
    const before = fingerprint(damagedDir);
    const cat = await open(damagedDir);
    try {
      const r = await verifyTarget(cat, {});
      expect(r.damaged).toBe(true);
      const bad = Object.fromEntries(r.backups.filter((b) => b.badBlocks.length).map((b) => [`${b.volume}/${b.name}`,
        b.badBlocks.map((x) => ({ offset: x.offset, problem: x.problem }))]));
      expect(bad).toEqual(Object.fromEntries(damage.bad));
      expect(r.badObjects).toHaveLength(3);
      expect(r.badObjects.find((o) => o.problem === 'corrupt')!.backups.sort()).toEqual(['vol-gzip/g-full', 'vol-gzip/g-incr']);
      // One backup only.
      const one = await verifyTarget(cat, { volume: 'vol-lz4', backup: 'l-before-expand' });
      expect(one.damaged).toBe(false);
      expect(one.backups.map((b) => b.name)).toEqual(['l-before-expand']);
    } finally {
      cat.close();
    }
    expect(fingerprint(damagedDir)).toBe(before);
  });

  it('by default a read of a bad block fails naming its offset and checksum; the rest reads', async () => {
    const cat = await open(damagedDir);
    try {
      const view = cat.view('volumes/vol-gzip/backups/g-full.img')!;
      const opened = await view.open({});
      const buf = Buffer.alloc(64 << 10);
      await expect(opened.chain.readAsync(buf, 0, buf.length, 3 * BLOCK + 4096))
        .rejects.toThrow(new RegExp(`block at offset ${3 * BLOCK} \\(checksum ${checksum(pattern(3, BLOCK))}\\): block does not decompress`));
      await opened.chain.readAsync(buf, 0, buf.length, 0);
      expect(buf.equals(pattern(1, BLOCK).subarray(0, buf.length))).toBe(true);
      opened.close();
    } finally {
      cat.close();
    }
  });

  it('--bad-blocks zero serves zeros there, everything else intact, and reports the block', async () => {
    const cat = await open(damagedDir, { badBlocks: 'zero' });
    try {
      const p = 'volumes/vol-gzip/backups/g-incr.img';
      const { data } = await readView(cat, p);
      const want = Buffer.from(sample.expected.get(p)!);
      want.fill(0, 3 * BLOCK, 4 * BLOCK);
      expect(sha256(data)).toBe(sha256(want));
      const rep = cat.report() as { badBlocks: { view: string; offset: number; problem: string }[] };
      expect(rep.badBlocks.map((b) => [b.view, b.offset, b.problem])).toEqual([[p, 3 * BLOCK, 'corrupt']]);
    } finally {
      cat.close();
    }
  });
});

describe('names and parameters', () => {
  it('target URLs', () => {
    expect(parseTargetArg('s3://bkt@us-east-1/lh/?backup=b-1&volume=pvc-1')).toMatchObject({
      location: { kind: 's3', bucket: 'bkt', region: 'us-east-1', prefix: 'lh/' }, backup: 'b-1', volume: 'pvc-1',
    });
    expect(parseTargetArg('s3://bkt@r/')).toMatchObject({ location: { prefix: '' } });
    expect(parseTargetArg('vfs:///srv/t?backingImage=bi')).toMatchObject({ location: { kind: 'dir', dir: '/srv/t' }, backingImage: 'bi' });
    // The backupstore/ directory itself names its target too.
    expect(parseTargetArg(path.join(sample.dir, 'backupstore'))).toMatchObject({ location: { kind: 'dir', dir: sample.dir } });
    expect(() => parseTargetArg('nfs://server:/export')).toThrow(/mount the share .*pass the directory that holds backupstore/);
    expect(() => parseTargetArg('cifs://server/share')).toThrow(/mount the share/);
  });

  it('cfgs: double-encoded or plain strings, Blocks in any order (the later duplicate wins), other spellings', () => {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);
    const v = parseVolumeCfg('v', '{"Name":"v","Size":"4194304","BackingImageName":"\\"bi\\"","CompressionMethod":"lz4"}');
    expect([v.backingImageName, v.compression, v.dataEngine]).toEqual(['bi', 'lz4', 'v1']);
    expect(parseVolumeCfg('v', '{"Name":"v","Size":"1"}').compression).toBe('gzip');
    expect(() => parseVolumeCfg('v.cfg', '{"Name":"v","Size":"0"}')).toThrow(/v.cfg: .*Size is 0/);
    expect(() => parseVolumeCfg('v.cfg', '{"Size":"1","CompressionMethod":"\\"zstd\\""}')).toThrow(/unsupported compression method "zstd"/);
    const text = `{"Name":"x","CreatedTime":"t","Blocks":[{"Offset":4194304,"BlockChecksum":"${a}"},{"Offset":0,"BlockChecksum":"${a}"},{"Offset":4194304,"BlockChecksum":"${b}"}]}`;
    expect(parseBackupCfg('x', text).blockCount).toBe(3);
    const m = parseBlocks('x', text, BLOCK);
    expect([...m.index]).toEqual([0, 2]);
    expect([m.checksum(0), m.checksum(1)]).toEqual([a, b]);
    const other = `{"Blocks": [ {"BlockChecksum": "${a.toUpperCase()}", "Offset": 2097152} ]}`;
    expect(parseBlocks('y', other, BLOCK).checksum(0)).toBe(a);
    expect(() => parseBlocks('z.cfg', `{"Blocks":[{"Offset":5,"BlockChecksum":"${a}"}]}`, BLOCK)).toThrow(/z.cfg: .*offset 5 is not a multiple/);
  });

  it("S3 settings from the backup-target secret's variables", () => {
    const saved = { ...process.env };
    try {
      const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
      Object.assign(process.env, { AWS_ENDPOINTS: 'https://minio.local:9000', AWS_CERT: pem, VIRTUAL_HOSTED_STYLE: '' });
      let c = clientConfig('eu-west-1', 8);
      expect(c).toMatchObject({ region: 'eu-west-1', endpoint: 'https://minio.local:9000', forcePathStyle: true });
      expect((c.requestHandler as { httpsAgent: { ca: string } }).httpsAgent.ca).toBe(pem);
      const certFile = path.join(tmp, 'ca.pem');
      fs.writeFileSync(certFile, pem);
      Object.assign(process.env, { AWS_CERT: certFile, VIRTUAL_HOSTED_STYLE: 'true', AWS_REGION: 'ap-south-1' });
      c = clientConfig(undefined, 8);
      expect(c).toMatchObject({ region: 'ap-south-1', forcePathStyle: false });
      expect((c.requestHandler as { httpsAgent: { ca: string } }).httpsAgent.ca).toBe(pem);
      delete process.env.AWS_ENDPOINTS;
      process.env.AWS_CERT = '/nonexistent/ca.pem';
      expect(() => clientConfig('us-east-1', 8)).toThrow(/AWS_CERT: is neither a PEM certificate nor a readable file/);
    } finally {
      process.env = saved;
    }
  });

  it('a live deletion lock is warned about; an expired one is not', async () => {
    const dir = path.join(tmp, 'locked');
    fs.cpSync(sample.dir, dir, { recursive: true });
    const locks = path.join(dir, volumeDir('vol-lz4'), 'locks');
    fs.mkdirSync(locks);
    fs.writeFileSync(path.join(locks, 'lock-0123456789abcdef.lck'), JSON.stringify({ Name: 'lock-0123456789abcdef', Type: 2, Acquired: true }));
    const old = path.join(dir, volumeDir('vol-gzip'), 'locks');
    fs.mkdirSync(old);
    fs.writeFileSync(path.join(old, 'lock-fedcba9876543210.lck'), JSON.stringify({ Name: 'lock-fedcba9876543210', Type: 2, Acquired: true }));
    const t = new Date(Date.now() - 10 * 60_000);
    fs.utimesSync(path.join(old, 'lock-fedcba9876543210.lck'), t, t);
    const cat = await open(dir);
    try {
      const w = cat.warnings.filter((x) => /deletion lock/.test(x));
      expect(w).toHaveLength(1);
      expect(w[0]).toMatch(/^volume vol-lz4: a deletion lock is live/);
    } finally {
      cat.close();
    }
  });

  it('backup-block-size as a Kubernetes quantity', () => {
    expect(parseBlockSize('f', undefined)).toBe(2 * MiB);
    expect(parseBlockSize('f', '0')).toBe(2 * MiB);
    expect(parseBlockSize('f', '16Mi')).toBe(16 * MiB);
    expect(parseBlockSize('f', '2097152')).toBe(2 * MiB);
    expect(() => parseBlockSize('f', 'lots')).toThrow(/not a usable block size/);
  });

  it('a backup cfg larger than the listing prefix: listed from its head, opened whole', async () => {
    const dir = path.join(tmp, 'large-cfg');
    const b = new TargetBuilder(dir);
    const n = 3000; // ~320 KiB of Blocks: more than the 256 KiB listing reads
    b.volume('vol-large', { size: n * BLOCK, compression: 'lz4' });
    const same = pattern(77, BLOCK);
    const blocks = new Map(Array.from({ length: n }, (_, i) => [i * BLOCK, same] as [number, Buffer]));
    b.backup('vol-large', 'big', { blocks });
    const cfgFile = path.join(dir, volumeDir('vol-large'), 'backups', 'backup_big.cfg');
    expect(fs.statSync(cfgFile).size).toBeGreaterThan(256 << 10);
    const cat = await open(dir);
    try {
      const v = cat.view('volumes/vol-large/backups/big.img')!;
      expect(v.allocatedBytes).toBe(n * BLOCK);
      expect((cat.report() as { volumes: { backups: { blocks: number }[] }[] }).volumes[0].backups[0].blocks).toBe(n);
      const opened = await v.open({});
      const buf = Buffer.alloc(4096);
      await opened.chain.readAsync(buf, 0, 4096, (n - 1) * BLOCK + 8192);
      expect(buf.equals(same.subarray(8192, 8192 + 4096))).toBe(true);
      expect(opened.chain.runs(0, n * BLOCK)).toHaveLength(1);
      opened.close();
    } finally {
      cat.close();
    }
  });

  it('a 16 MiB block-size backup reads right', async () => {
    const dir = path.join(tmp, 'big-blocks');
    const b = new TargetBuilder(dir);
    b.volume('vol-16', { size: 32 * MiB, compression: 'lz4' });
    const blocks = new Map([[16 * MiB, pattern(16, 16 * MiB)]]);
    b.backup('vol-16', 'b16', { blocks, parameters: { 'backup-block-size': '16Mi' } });
    const cat = await open(dir);
    try {
      expect((await readView(cat, 'volumes/vol-16/backups/b16.img')).sha256).toBe(sha256(TargetBuilder.restore(32 * MiB, blocks)));
    } finally {
      cat.close();
    }
  });
});
