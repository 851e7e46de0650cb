/**
 * A v2 disk on a block device (a loop device over a copy of an SPDK-written
 * image): its size comes from /sys, it reads as the manifest says, and a
 * device another process holds open for writing (as SPDK's aio bdev does)
 * is refused in one line naming that process, unless --force. Needs root
 * (losetup), as the mount tests need /dev/fuse.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { source } from '../src/source/spdk/index';
import { openSpdk } from '../src/source/spdk/open';
import { FIXTURES, readView, sha256, unpackFixture } from './helpers/spdk-oracle';

let dir: string;
let dev = '';
let holder: ChildProcess | undefined;
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, '01-single-replica-chain', 'manifest.json'), 'utf8'));

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-dev-'));
  const img = unpackFixture('01-single-replica-chain', dir);
  dev = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
});

afterAll(() => {
  if (holder?.pid) process.kill(holder.pid, 'SIGKILL');
  if (dev) execFileSync('losetup', ['-d', dev]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('a v2 disk on a block device', () => {
  it('is detected, sized from /sys and read as SPDK read it', async () => {
    expect(fs.statSync(dev).isBlockDevice()).toBe(true);
    expect(source.detect(dev)).toBe(true);
    const cat = openSpdk([dev]);
    expect(cat.disks[0].dev.size).toBe(manifest.image.size_bytes);
    for (const m of manifest.lvols) expect(sha256(await readView(cat.select({ lvol: m.name }))), m.name).toBe(m.sha256);
    cat.close();
  });

  it('open for writing by another process: refused naming it, read with --force and a warning', async () => {
    holder = spawn('sh', ['-c', `exec 3<>"${dev}"; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => holder!.stdout!.once('data', () => resolve()));
    expect(() => openSpdk([dev])).toThrow(new RegExp(`^${dev}: block device looks in use: process \\d+ \\(sleep\\) has it open for writing; detach it from SPDK`));
    const cat = openSpdk([dev], { force: true });
    expect(cat.warnings.join('\n')).toMatch(/block device looks in use \(process \d+ \(sleep\) has it open for writing\); reading it anyway \(--force\)/);
    cat.close();
    process.kill(holder.pid!, 'SIGKILL');
    await new Promise((resolve) => holder!.once('exit', resolve));
    holder = undefined;
    openSpdk([dev]).close();
  });
});
