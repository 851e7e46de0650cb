/**
 * Exports of lvols of a v2 disk on a block device (a loop device over a
 * copy of an SPDK-written image): the writers map and copy the device's
 * bytes (a block device's st_size is 0: its size must come from the
 * device), and the copy_file_range of a raw export falls back to a buffer
 * (the kernel does not copy from a block device). Every lvol, raw, raw
 * --checksum and qcow2, must hold what SPDK wrote (the fixture's sha256).
 * Needs root (losetup).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainfsOk } from './helpers/cli';
import { qemuImg } from './helpers/qemu';
import { FIXTURES, sha256, unpackFixture } from './helpers/spdk-oracle';

const NAME = '01-single-replica-chain';
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, NAME, 'manifest.json'), 'utf8'));
let dir: string;
let dev = '';

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-export-dev-'));
  dev = execFileSync('losetup', ['-f', '--show', '--read-only', unpackFixture(NAME, dir)], { encoding: 'utf8' }).trim();
});

afterAll(() => {
  if (dev) execFileSync('losetup', ['-d', dev]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('export of lvols on a block device', () => {
  it('raw, raw --checksum and qcow2 of every lvol hold what SPDK wrote', () => {
    expect(fs.statSync(dev).isBlockDevice()).toBe(true);
    for (const l of manifest.lvols as { name: string; sha256: string }[]) {
      const raw = path.join(dir, 'lvol.raw');
      chainfsOk(['export', dev, '--lvol', l.name, raw, '--overwrite', '--quiet']);
      expect(sha256(fs.readFileSync(raw)), `${l.name}: raw`).toBe(l.sha256);
      const printed = chainfsOk(['export', dev, '--lvol', l.name, raw, '--overwrite', '--checksum', '--quiet']).toString();
      const bytes = fs.readFileSync(raw);
      expect(sha256(bytes), `${l.name}: raw --checksum`).toBe(l.sha256);
      expect(printed).toBe(`${createHash('sha512').update(bytes).digest('hex')}  ${raw}\n`);
      const q = path.join(dir, 'lvol.qcow2');
      chainfsOk(['export', dev, '--lvol', l.name, q, '--format', 'qcow2', '--overwrite', '--quiet']);
      qemuImg(['check', '-q', '-f', 'qcow2', q]);
      const back = path.join(dir, 'back.raw');
      qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', q, back]);
      expect(sha256(fs.readFileSync(back)), `${l.name}: qcow2`).toBe(l.sha256);
      for (const f of [raw, q, back]) fs.rmSync(f);
    }
  });
});
