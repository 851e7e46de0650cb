/**
 * The user's real job: loop-mount the file system inside the mounted image,
 * read-only, and read files. The volume's ext4 is spread over a raw backing
 * image, a snapshot and the head; the backing image is found through
 * BackingFilePath relative to the copied data root (the /host path does not
 * exist here).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildExt4Replica, hashTree, type Ext4Replica } from './helpers/ext4-replica';
import { mountReplica, unmount, unmountAll } from './helpers/mount';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-ext4-'));
const mp = path.join(tmp, 'mnt');
const loops: string[] = [];
const fsMounts: string[] = [];
let replica: Ext4Replica;

beforeAll(() => {
  replica = buildExt4Replica(tmp);
  mountReplica(replica.dir, mp);
});

afterAll(() => {
  for (const m of fsMounts) spawnSync('umount', [m]);
  for (const l of loops) spawnSync('losetup', ['-d', l]);
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function readFilesystem(image: string, at: string, expected: Map<string, string>): void {
  const loop = execFileSync('losetup', ['-r', '-f', '--show', image], { encoding: 'utf8' }).trim();
  loops.push(loop);
  fs.mkdirSync(at, { recursive: true });
  execFileSync('mount', ['-t', 'ext4', '-o', 'ro,noload', loop, at]);
  fsMounts.push(at);
  try {
    const seen = hashTree(at);
    expect(seen).toEqual(expected);
  } finally {
    execFileSync('umount', [at]);
    fsMounts.pop();
    execFileSync('losetup', ['-d', loop]);
    loops.splice(loops.indexOf(loop), 1);
  }
  const fsck = spawnSync('e2fsck', ['-n', '-f', image], { encoding: 'utf8' });
  expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
}

describe('ext4 inside the mounted image', () => {
  it('the head view mounts read-only through a loop device with every file as written', () => {
    readFilesystem(path.join(mp, 'volume.img'), path.join(tmp, 'fs-head'), replica.headFiles);
  });

  it('the snapshot view shows the file system as it was at the snapshot', () => {
    readFilesystem(path.join(mp, 'snapshots', `${replica.snapshot}.img`), path.join(tmp, 'fs-snap'), replica.snapshotFiles);
  });

  it('unmounts cleanly afterwards', () => {
    unmount(mp);
  });
});
