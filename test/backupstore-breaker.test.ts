/**
 * What a newcomer found by breaking the engine-written target (v1.7.0 fixture),
 * through the real CLI: blocks of a backup whose cfg cannot be read are never
 * called garbage; one impossible block offset damages that backup only (exact
 * in the message, not served, listed as damaged); --json trouble is an error
 * document; --cache-dir inside the target is refused, an unusable one warned
 * about; unknown URL schemes are refused by name; a cfg's path said once.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBlocks } from '../src/source/backupstore/cfg';
import { fingerprint, volumeDir } from './helpers/backupstore-builder';
import { extractFixture, fixtureManifest, sha256 } from './helpers/backupstore-read';
import { chainfs } from './helpers/cli';

const MiB = 1 << 20;
let tmp: string;
let n = 0;
const live = fixtureManifest().backups.filter((b) => b.status === 'live');

/** A fresh copy of the engine-written target; `damage(volumeDirectory)` breaks it. */
function target(damage: (vol: string) => void): string {
  const dir = path.join(tmp, `t${n++}`);
  fs.mkdirSync(dir);
  extractFixture(dir);
  damage(path.join(dir, volumeDir('vol-lz4')));
  return dir;
}

const cfg = (vol: string, backup: string) => path.join(vol, 'backups', `backup_${backup}.cfg`);

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-breaker-'));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Report {
  backups: { name: string; state: string; problem?: string }[];
  unreferencedBlocks: number;
  ownerUnknownBlocks: number;
  ownerUnknownKeys: string[];
  damaged: boolean;
}

describe('blocks whose owner is unknown are never garbage', () => {
  it('a truncated cfg: its blocks are "owner unknown", exit 1, in text and JSON', () => {
    const dir = target((vol) => fs.truncateSync(cfg(vol, 'backup-lz4-01'), 300));
    const before = fingerprint(dir);
    const r = chainfs(['verify', dir]);
    expect(r.code).toBe(1);
    const text = r.stdout.toString();
    expect(text).not.toMatch(/garbage|harmless/);
    expect(text).toMatch(/0 unreferenced block file\(s\); 6 block file\(s\) referenced by no readable cfg: owner unknown \(a backup cfg could not be read/);
    const j = chainfs(['verify', dir, '--json']);
    expect(j.code).toBe(1);
    const rep = JSON.parse(j.stdout.toString()) as Report;
    expect(rep).toMatchObject({ unreferencedBlocks: 0, ownerUnknownBlocks: 6, damaged: true });
    expect(rep.ownerUnknownKeys).toHaveLength(6);
    expect(fingerprint(dir)).toBe(before);
  });

  it('a broken volume.cfg: the backups still claim their blocks; a stray block is owner unknown, not garbage', () => {
    const stray = 'ab'.repeat(32);
    const dir = target((vol) => {
      const f = path.join(vol, 'volume.cfg');
      fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace(/"Size":"\d+"/, '"Size":"99999999999999999999999"'));
      fs.mkdirSync(path.join(vol, 'blocks', 'ab', 'ab'), { recursive: true });
      fs.writeFileSync(path.join(vol, 'blocks', 'ab', 'ab', `${stray}.blk`), 'x');
    });
    const r = chainfs(['verify', dir, '--json']);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout.toString()) as Report;
    expect(rep).toMatchObject({ unreferencedBlocks: 0, ownerUnknownBlocks: 1, damaged: true });
    expect(rep.ownerUnknownKeys[0]).toContain(stray);
    expect(chainfs(['verify', dir]).stdout.toString()).not.toMatch(/harmless/);
  });
});

describe('an impossible block offset damages its backup only', () => {
  const huge = '9007199254740993'; // 2^53 + 1: JSON.parse reads ...992

  it('verify checks the others, lists that backup damaged with the offset exact; exit 1', () => {
    const dir = target((vol) => {
      const f = cfg(vol, 'backup-lz4-03');
      fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace('"Offset":2097152,', `"Offset":${huge},`));
    });
    const r = chainfs(['verify', dir, '--json']);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout.toString()) as Report;
    const b03 = rep.backups.find((b) => b.name === 'backup-lz4-03')!;
    expect(b03.state).toBe('damaged');
    expect(b03.problem).toContain(`block offset ${huge} is too large to be exact`);
    expect(rep.backups.filter((b) => b.name !== 'backup-lz4-03').map((b) => b.state)).toEqual(['complete', 'complete']);
    const text = chainfs(['verify', dir]).stdout.toString();
    expect(text).toMatch(new RegExp(`DAMAGED +vol-lz4/backup-lz4-03: .*${huge}`));
    expect(text).toMatch(/ok +vol-lz4\/backup-lz4-01/);
    // inspect lists it as damaged; cat refuses it in one line; the others are still served.
    const inspect = chainfs(['inspect', dir, '--no-contents']).stdout.toString();
    expect(inspect).toMatch(/backup-lz4-03 .* damaged/);
    const cat = chainfs(['cat', dir, '--backup', 'backup-lz4-03']);
    expect(cat.code).toBe(1);
    expect(cat.stderr.trim().split('\n')).toHaveLength(1);
    expect(cat.stderr).toContain(huge);
    const ok = chainfs(['cat', dir, '--backup', live[0].name]);
    expect(sha256(ok.stdout)).toBe(live[0].sha256);
  });

  it('a large cfg (listed from its head) with an offset past the volume: verify still checks the rest', () => {
    const dir = target((vol) => {
      const text = fs.readFileSync(cfg(vol, 'backup-lz4-04-fullmode'), 'utf8');
      const sum = /"BlockChecksum":"([0-9a-f]{64})"/.exec(text)![1];
      const blocks = Array.from({ length: 4000 }, (_, i) => `{"Offset":${i * 2 * MiB},"BlockChecksum":"${sum}"}`).join(',');
      const big = text.replace(/"Size":"\d+"/, `"Size":"${4000 * 2 * MiB}"`).replace(/"Name":"[^"]*"/, '"Name":"backup-big"')
        .replace(/"Blocks":\[[^\]]*\]/, `"Blocks":[${blocks}]`);
      expect(big.length).toBeGreaterThan(256 << 10);
      fs.writeFileSync(cfg(vol, 'backup-big'), big);
    });
    const r = chainfs(['verify', dir, '--json']);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout.toString()) as Report;
    expect(rep.backups.find((b) => b.name === 'backup-big')).toMatchObject({ state: 'damaged' });
    expect(rep.backups.find((b) => b.name === 'backup-big')!.problem).toContain(`block offset ${64 * MiB} is past the end (size ${64 * MiB})`);
    expect(rep.backups.filter((b) => b.state === 'complete')).toHaveLength(3);
  });

  it('parseBlocks says exactly what is wrong: negative, unaligned, past the end, not exact', () => {
    const sum = 'a'.repeat(64);
    const cfgOf = (offs: string[]) => `{"Blocks":[${offs.map((o) => `{"Offset":${o},"BlockChecksum":"${sum}"}`).join(',')}]}`;
    expect(() => parseBlocks('F', cfgOf(['-2097152']), 2 * MiB)).toThrow('F: not a Longhorn backup config: block offset -2097152 is negative');
    expect(() => parseBlocks('F', cfgOf(['4096']), 2 * MiB)).toThrow('block offset 4096 is not a multiple of the block size 2097152');
    expect(() => parseBlocks('F', cfgOf(['0', '4194304']), 2 * MiB, 4 * MiB)).toThrow('block offset 4194304 is past the end (size 4194304)');
    expect(() => parseBlocks('F', cfgOf([huge]), 2 * MiB)).toThrow(`block offset ${huge} is too large to be exact`);
    // The slow path (another key order) quotes the offset as written too.
    const other = `{"Blocks":[{"BlockChecksum":"${sum}","Offset":${huge}}]}`;
    expect(() => parseBlocks('F', other, 2 * MiB)).toThrow(`block offset ${huge} is too large to be exact`);
    expect(parseBlocks('F', cfgOf(['0', '2097152']), 2 * MiB, 4 * MiB).length).toBe(2);
  });

  it('verify --json on a target that cannot be read: the error document on stdout, exit 2', () => {
    const r = chainfs(['verify', path.join(tmp, 'nothing-here'), '--json']);
    expect(r.code).toBe(2);
    const j = JSON.parse(r.stdout.toString()) as { error: { code: string; message: string } };
    expect(j.error.message).toMatch(/nothing-here: backup target: no such file or directory/);
    expect(j.error.code).toBe('not-found');
  });
});

describe('--cache-dir', () => {
  it('inside the target is refused in one line; the target is not written', () => {
    const dir = target(() => undefined);
    const before = fingerprint(dir);
    for (const c of [path.join(dir, 'backupstore', 'cache'), path.join(dir, 'cache')]) {
      const r = chainfs(['cat', dir, '--backup', live[0].name, '--cache-dir', c]);
      expect(r.code).toBe(1);
      expect(r.stdout.length).toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/--cache-dir\) would be written inside the source .*sources are never written/);
    }
    expect(fingerprint(dir)).toBe(before);
  });

  it('a file, or a directory that cannot be made: one warning that the on-disk cache is off, the read goes on', () => {
    const dir = target(() => undefined);
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, 'x');
    for (const [c, why] of [[file, 'is not a directory'], [path.join(file, 'sub'), `${file} is not a directory`],
      ['/proc/chainfs-no-cache', 'cannot be created']] as const) {
      const r = chainfs(['cat', dir, '--backup', live[0].name, '--cache-dir', c]);
      expect(r.code, c).toBe(0);
      expect(sha256(r.stdout)).toBe(live[0].sha256);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`chainfs: warning: --cache-dir ${c}: ${why}`);
      expect(lines[0]).toContain('the on-disk block cache is off');
    }
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });
});

describe('URL schemes and messages', () => {
  it('azblob:// and any unknown scheme are refused by name, not read as a directory', () => {
    for (const [arg, want] of [['azblob://x/', /^chainfs: azblob:\/\/x\/: azblob:\/\/ backup targets are not read by chainfs: /],
      ['gopher://x/y', /^chainfs: gopher:\/\/x\/y: gopher:\/\/ backup targets are not read by chainfs/]] as const) {
      const r = chainfs(['inspect', arg], { cwd: tmp });
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(want);
      expect(r.stderr).not.toContain('replica directory');
    }
  });

  it("a truncated backup cfg: its path once in the message", () => {
    let file = '';
    const dir = target((vol) => {
      file = cfg(vol, 'backup-lz4-03');
      fs.truncateSync(file, 300);
    });
    const r = chainfs(['cat', dir, '--backup', 'backup-lz4-03']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.split(file)).toHaveLength(2);
    expect(r.stderr).toMatch(/not a Longhorn backup config: invalid JSON/);
  });
});

describe('backup cfgs that are not regular files (second breaker)', () => {
  it('a FIFO and a symlink named backup_X.cfg are listed as unreadable by inspect and verify, not silently left out; nothing hangs', () => {
    let vol = '';
    const dir = target((v) => { vol = v; });
    const before = fingerprint(dir); // (it reads every file: taken without the FIFO, compared once it is gone)
    const fifo = cfg(vol, 'backup-fifo');
    const link = cfg(vol, 'backup-link');
    execFileSync('mkfifo', [fifo]);
    fs.symlinkSync('backup_backup-lz4-01.cfg', link);
    const i = chainfs(['inspect', dir, '--json', '--no-contents']);
    expect(i.code, i.stderr).toBe(0);
    const doc = JSON.parse(i.stdout.toString()) as { volumes: { name: string; backups: { name: string; state: string; problem?: string }[] }[] };
    const bs = doc.volumes.find((v) => v.name === 'vol-lz4')!.backups;
    expect(bs.find((b) => b.name === 'backup-fifo')).toMatchObject({ problem: `${fifo}: is not a regular file` });
    expect(bs.find((b) => b.name === 'backup-link')).toMatchObject({ problem: expect.stringContaining(`${link}: is a symbolic link`) });
    const v = chainfs(['verify', dir, '--volume', 'vol-lz4']);
    expect(v.code).toBe(1);
    expect(v.stdout.toString()).toContain('backup-fifo');
    expect(v.stdout.toString()).toContain('backup-link');
    // the other backups still read as the engine restored them
    for (const b of live) {
      expect(sha256(chainfs(['cat', dir, '--volume', fixtureManifest().volume, '--backup', b.name]).stdout), b.name).toBe(b.sha256);
    }
    expect(fs.statSync(fifo).isFIFO()).toBe(true);
    expect(fs.readlinkSync(link)).toBe('backup_backup-lz4-01.cfg');
    fs.rmSync(fifo);
    fs.rmSync(link);
    // every file as it was (the backups/ directory's own mtime moved with the test's mkfifo and rm)
    const unlessDir = (f: string) => f.split('\n').filter((l) => !l.startsWith(`${volumeDir('vol-lz4')}/backups/ `)).join('\n');
    expect(unlessDir(fingerprint(dir))).toBe(unlessDir(before));
  });
});

describe('huge backup cfgs (second breaker)', () => {
  it('a 2 GiB cfg of zeros and a 600 MiB one that begins like JSON: each listed as unreadable in one line, never read whole; the rest is served', () => {
    let vol = '';
    const dir = target((v) => { vol = v; });
    const zeros = cfg(vol, 'backup-zeros');
    const json = cfg(vol, 'backup-json');
    fs.writeFileSync(zeros, '');
    fs.truncateSync(zeros, 2 * 1024 * MiB);
    fs.writeFileSync(json, '{"Name":"backup-json",');
    fs.truncateSync(json, 600 * MiB);
    try {
      const i = chainfs(['inspect', dir, '--json', '--no-contents']);
      expect(i.code, i.stderr).toBe(0);
      const doc = JSON.parse(i.stdout.toString()) as { volumes: { name: string; backups: { name: string; problem?: string }[] }[] };
      const bs = doc.volumes.find((v) => v.name === 'vol-lz4')!.backups;
      expect(bs.find((b) => b.name === 'backup-zeros')!.problem).toBe(`${zeros}: not a Longhorn backup cfg: ${2 * 1024 * MiB} bytes that do not begin with a JSON object`);
      expect(bs.find((b) => b.name === 'backup-json')!.problem).toMatch(new RegExp(`^${json}: is ${600 * MiB} bytes, more than any Longhorn cfg chainfs can read \\(\\d+ bytes at most\\): not read$`));
      for (const b of live) {
        expect(sha256(chainfs(['cat', dir, '--volume', fixtureManifest().volume, '--backup', b.name]).stdout), b.name).toBe(b.sha256);
      }
      const r = chainfs(['cat', dir, '--volume', 'vol-lz4', '--backup', 'backup-zeros']);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    } finally {
      fs.rmSync(zeros);
      fs.rmSync(json);
    }
  });
});
