/**
 * Breaker findings on v2 disks, on SPDK-written images (fixture 01) and its
 * damaged copies: two copies of one disk get distinct, selectable names and
 * a warning; `--volume V --snapshot S` reads a readable snapshot although
 * the picked replica's head is broken (and a refusal names the --replica
 * choices); free clusters of a truncated image are the blobstore's (104),
 * not 104 + the claimed clusters past the image's end.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSpdk } from '../src/source/spdk/open';
import { chainfs } from './helpers/cli';
import { MiB, SpdkDiskBuilder } from './helpers/spdk-builder';
import { REP_A, chainScenario } from './helpers/spdk-scenarios';
import { fileSha256, readView, sha256, unpackFixture } from './helpers/spdk-oracle';

const VOL = 'pvc-3f6d2a8e-91b4-4c1e-a7d2-5b0e8c4f1a93';
const REP = `${VOL}-r-5c2e9a17`;
const SHA_HEAD = '61ab20bcf33f0f882f52edae0f9921ee7e7d0f7726ba1a7f7207982fc8bd63cc';
const SHA_BEFORE_UPGRADE = 'bee88a61876e60a5011effe124eae6e1a0a0b9cfe9c2bbc9c494d3ecf20024af';
/** Fixture 01's snapshot a91f4d27 (blob 0x100000007, the head's parent) has its first md page at page 7: md_start 4. */
const PAGE7_BYTE = (4 + 7) * 4096 + 301;

let tmp: string;
let pristine: string;
let n = 0;
const made: { file: string; sha: string }[] = [];

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-spdk-select-'));
  pristine = unpackFixture('01-single-replica-chain', tmp);
});

afterAll(() => {
  for (const m of made) expect(fileSha256(m.file), m.file).toBe(m.sha); // never written
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A copy of fixture 01, damaged by `dmg`. */
function copy(dmg?: 'md' | 'trunc'): string {
  const f = path.join(tmp, `d${n++}.img`);
  fs.copyFileSync(pristine, f);
  if (dmg === 'md') {
    const fd = fs.openSync(f, 'r+');
    fs.writeSync(fd, Buffer.from([0x7d]), 0, 1, PAGE7_BYTE);
    fs.closeSync(fd);
  }
  if (dmg === 'trunc') fs.truncateSync(f, 20 * MiB);
  made.push({ file: f, sha: fileSha256(f) });
  return f;
}

describe('two copies of one disk', () => {
  it('get NAME@1 / NAME@2 by position, each selectable, and a same-lvstore-UUID warning', async () => {
    const a = copy();
    const b = copy();
    const cat = openSpdk([a, b]);
    expect(cat.warnings.join('\n')).toMatch(new RegExp(`${b}: same lvstore UUID 0ef85146-179d-4fb3-a62c-c9bca16fb413 as ${a}: two copies of one disk\\?`));
    expect(cat.warnings).toContain(`${b}: replica ${REP} is on several disks; this copy is ${REP}@2 (disk 2)`);
    const paths = cat.views().map((v) => v.path);
    expect(paths).toContain(`volumes/${VOL}/replicas/${REP}@1/volume.img`);
    expect(paths).toContain(`volumes/${VOL}/replicas/${REP}@2/snapshots/before-upgrade.img`);
    expect(paths).toContain(`lvols/${REP}@2.img`);
    expect(new Set(paths).size).toBe(paths.length);
    expect(cat.render()).toContain(`  replica ${REP}@2 on disk-nvme1 (${b}) [equivalent]: 32.0 MiB`);
    expect(paths.filter((p) => p.includes('~'))).toEqual([]);
    const v2 = cat.select({ volume: VOL, replica: `${REP}@2` });
    expect(v2.path).toBe(`volumes/${VOL}/replicas/${REP}@2/volume.img`);
    expect(sha256(await readView(v2))).toBe(SHA_HEAD);
    expect(sha256(await readView(cat.select({ replica: `${REP}@1`, snapshot: 'before-upgrade' })))).toBe(SHA_BEFORE_UPGRADE);
    // The lvstore's name is on both: the error names the distinct choices.
    expect(() => cat.select({ volume: VOL, replica: `${REP}@disk-nvme1` })).toThrow(`replica ${REP}@disk-nvme1 is on several disks: ${REP}@1, ${REP}@2; name one of those`);
    expect(() => cat.select({ volume: VOL, replica: REP })).toThrow(`is on several disks: ${REP}@1, ${REP}@2;`);
    cat.close();
  });

  it('through the CLI: cat --replica NAME@2, and inspect warns', () => {
    const a = copy();
    const b = copy();
    const r = chainfs(['cat', a, b, '--volume', VOL, '--replica', `${REP}@2`]);
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(r.stdout)).toBe(SHA_HEAD);
    const i = chainfs(['inspect', '--no-contents', a, b]);
    expect(String(i.stdout) + i.stderr).toContain('same lvstore UUID 0ef85146-179d-4fb3-a62c-c9bca16fb413');
  });
});

describe('--volume V --snapshot S when the picked replica has no readable head', () => {
  it('a bad md page in the head\'s parent: the older snapshot is read from the one replica that has it', async () => {
    const cat = openSpdk([copy('md')]);
    expect(cat.model.volumes[0].picked).toBeUndefined();
    const v = cat.select({ volume: VOL, snapshot: 'before-upgrade' });
    expect(v.path).toBe(`volumes/${VOL}/replicas/${REP}/snapshots/before-upgrade.img`);
    expect(sha256(await readView(v))).toBe(SHA_BEFORE_UPGRADE);
    expect(() => cat.select({ volume: VOL, snapshot: 'a91f' })).toThrow(new RegExp(`volume ${VOL}: no replica has a readable snapshot "a91f" \\(${REP}: .*metadata page 7 checksum mismatch\\); --replica chooses from: ${REP}$`));
    expect(() => cat.select({ volume: VOL, snapshot: 'nope' })).toThrow(`volume ${VOL}: no replica has a snapshot "nope"`);
    expect(() => cat.select({ volume: VOL })).toThrow(new RegExp(`has no replica with a readable head: .*; --replica chooses from: ${REP} \\(with --snapshot for a snapshot\\)$`));
    cat.close();
  });

  it('a truncated image: the snapshot is read', async () => {
    const cat = openSpdk([copy('trunc')]);
    expect(sha256(await readView(cat.select({ volume: VOL, snapshot: 'before-upgrade' })))).toBe(SHA_BEFORE_UPGRADE);
    cat.close();
  });

  it('several replicas have it readable: the picked one, else an error naming them', async () => {
    const bad = copy('md');
    const good = copy();
    let cat = openSpdk([bad, good]);
    const v = cat.select({ volume: VOL, snapshot: 'before-upgrade' });
    expect(v.path).toBe(`volumes/${VOL}/replicas/${REP}@2/snapshots/before-upgrade.img`);
    cat.close();
    cat = openSpdk([bad, copy('md')]);
    expect(() => cat.select({ volume: VOL, snapshot: 'before-upgrade' }))
      .toThrow(`volume ${VOL}: no replica has a readable head to pick, and several replicas have it: ${REP}@1, ${REP}@2; choose one with --replica`);
    expect(sha256(await readView(cat.select({ volume: VOL, replica: `${REP}@2`, snapshot: 'before-upgrade' })))).toBe(SHA_BEFORE_UPGRADE);
    cat.close();
  });

  it('through the CLI, as the breaker ran it', () => {
    const f = copy('md');
    const r = chainfs(['cat', '--volume', VOL, '-s', 'before-upgrade', f]);
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(r.stdout)).toBe(SHA_BEFORE_UPGRADE);
  });
});

describe('free clusters of a truncated image', () => {
  it('fixture 01 cut to 20 MiB: 104 free (the used-cluster mask), as the whole image', () => {
    const cat = openSpdk([copy('trunc')]);
    expect(cat.disks[0].lvs.bs.freeClusters).toBe(104);
    expect(cat.render()).toContain('127 data, 104 free; 4 lvols');
    cat.close();
  });

  it('a crashed store (no masks) cut short: clusters claimed past the end are not free', () => {
    const b = new SpdkDiskBuilder();
    chainScenario(b);
    const file = path.join(tmp, 'crashed.img');
    b.build(file, { clean: false });
    const whole = openSpdk([file]);
    const free = whole.disks[0].lvs.bs.freeClusters;
    whole.close();
    const top = Math.max(...[...b.blobs.values()].flatMap((x) => x.clusters));
    fs.truncateSync(file, (top - 2) * MiB);
    const cat = openSpdk([file]);
    expect(cat.disks[0].lvs.bs.sb.clean).toBe(0);
    expect(cat.disks[0].lvs.bs.freeClusters).toBe(free);
    expect(cat.disks[0].lvs.bs.freeFrom).toBe('blobs');
    cat.close();
  });

  it('a blob whose metadata is unreadable on a crashed store: "at most N free"', () => {
    const b = new SpdkDiskBuilder();
    chainScenario(b);
    const file = path.join(tmp, 'crashed-md.img');
    b.build(file, { clean: false });
    const s1 = b.byName(`${REP_A}-snap-s1`);
    const ep = s1.extentPages.find((x) => x > 0)!; // its extent page: the blob is found, its clusters are not
    const pos = b.pageOffset(ep) + 301;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([0x7d]), 0, 1, pos);
    fs.closeSync(fd);
    const cat = openSpdk([file]);
    expect(cat.disks[0].lvs.bs.freeFrom).toBe('blobs-partial');
    expect(cat.render()).toMatch(/data, at most \d+ free;/);
    cat.close();
  });
});
