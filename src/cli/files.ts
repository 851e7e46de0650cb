/**
 * `chainfs mount SOURCE MP --files`: the files inside the views, without a
 * loop device (containers often have none) and without root inside the
 * image: each view (or partition) holding ext2/3/4 gets `fuse2fs -o
 * ro,norecovery` (Debian package fuse2fs) on the mounted image file
 * `MP/<view path>`, mounted at `MP/files/<view path>/` (a partition:
 * `MP/files/<view path>/p<N>/`, with fuse2fs's `offset=`). The directories
 * are part of the chainfs tree; the fuse2fs mounts sit on top of them.
 *
 * The daemon runs fuse2fs itself, asynchronously: fuse2fs reads the image
 * through this very mount, so the daemon's event loop must keep serving
 * while fuse2fs starts (a spawnSync would deadlock). fuse2fs daemonizes
 * once mounted. At unmount the fuse2fs mounts go first (they hold the
 * image files open).
 *
 * Other file systems get a warning naming what would work (guestmount);
 * views are probed from their first MiB (probe.ts), at most PROBE_LIMIT.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Catalog } from '../source/catalog';
import { mountsBelow } from '../fuse/mountpoint';
import { PROBE_LIMIT, probeView, type Probed } from './probe';

/** The top directory of the files tree in the mount. */
export const FILES_DIR = 'files';
/** How long one fuse2fs may take to mount. */
const FUSE2FS_TIMEOUT_MS = 30_000;
const EXT = new Set(['ext2', 'ext3', 'ext4']);

/** One fuse2fs mount to make. */
export interface FilesTarget {
  /** The view's path in the catalog (its image file is `MP/<view>`). */
  view: string;
  /** Where its files appear, relative to MP: `files/<view>` or `files/<view>/p<N>`. */
  dir: string;
  /** Byte offset of the file system in the view (a partition's start), 0 for a whole-disk one. */
  offset: number;
}

/** What --files will mount, and what it will not (one warning each). */
export interface FilesPlan {
  targets: FilesTarget[];
  warnings: string[];
}

/** Whether fuse2fs is installed; checked before anything is probed. */
export function haveFuse2fs(): boolean {
  return !spawnSync('fuse2fs', ['-V'], { stdio: 'ignore' }).error;
}

/** Probes the catalog's views and plans a fuse2fs mount for each ext2/3/4 file system found. */
export async function planFiles(catalog: Catalog, mountPoint: string): Promise<FilesPlan> {
  const targets: FilesTarget[] = [];
  const warnings: string[] = [];
  if (!haveFuse2fs()) {
    return { targets, warnings: ['--files needs fuse2fs (Debian: apt-get install fuse2fs); no files are shown'] };
  }
  const views = catalog.views().filter((v) => !v.problem && v.size > 0);
  if (views.length > PROBE_LIMIT) warnings.push(`--files looks into the first ${PROBE_LIMIT} of ${views.length} views only`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-files-'));
  try {
    for (const v of views.slice(0, PROBE_LIMIT)) {
      const c = await probeView(v, path.join(tmp, 'head'), true);
      if (!c) continue;
      const found: Array<{ probed: Probed; dir: string; offset: number; where: string }> = c.ptType
        ? c.partitions.map((p) => ({ probed: p, dir: `${FILES_DIR}/${v.path}/p${p.number}`, offset: p.offset, where: `${v.path} partition ${p.number}` }))
        : [{ probed: c, dir: `${FILES_DIR}/${v.path}`, offset: 0, where: v.path }];
      for (const f of found) {
        if (f.probed.type && EXT.has(f.probed.type)) targets.push({ view: v.path, dir: f.dir, offset: f.offset });
        else if (f.probed.type) warnings.push(otherFileSystem(f.where, f.probed.type, mountPoint, v.path, f.offset));
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (targets.length === 0) warnings.push('--files: no ext2/3/4 file system found in the views; no files/ directory');
  return { targets, warnings };
}

function otherFileSystem(where: string, type: string, mp: string, view: string, offset: number): string {
  const image = path.join(mp, view);
  return `${where} holds ${type}, not ext2/3/4: --files does not show it; libguestfs reads it without a loop device: ` +
    `guestmount --ro -a ${image} -i DIR${offset ? ` (or -m /dev/sda<N>)` : ''}`;
}

/** The catalog, showing the (empty) directories the fuse2fs mounts will sit on. */
export function withFilesDirectories(catalog: Catalog, plan: FilesPlan): Catalog {
  if (plan.targets.length === 0) return catalog;
  const dirs = [FILES_DIR, ...plan.targets.map((t) => t.dir)];
  return {
    kind: catalog.kind, label: catalog.label, warnings: catalog.warnings,
    views: () => catalog.views(), view: (p) => catalog.view(p), files: () => catalog.files(),
    directories: () => [...(catalog.directories?.() ?? []), ...dirs],
    ...(catalog.inUse ? { inUse: () => catalog.inUse!() } : {}),
    report: () => catalog.report(), render: () => catalog.render(), select: (s) => catalog.select(s), close: () => catalog.close(),
  };
}

/**
 * Runs fuse2fs for each target (one after the other, asynchronously: see
 * above). Returns the warnings of those that failed (the mount goes on).
 */
export async function mountFiles(mountPoint: string, plan: FilesPlan, allowOther: boolean): Promise<string[]> {
  const failed: string[] = [];
  for (const t of plan.targets) {
    const opts = ['ro', 'norecovery', ...(t.offset ? [`offset=${t.offset}`] : []), ...(allowOther ? ['allow_other'] : [])];
    const at = path.join(mountPoint, t.dir);
    const why = await run('fuse2fs', [path.join(mountPoint, t.view), at, '-o', opts.join(',')]);
    if (why !== undefined) failed.push(`${t.view}: fuse2fs could not mount it at ${at}: ${why}`);
  }
  return failed;
}

/** Unmounts every mount under MP/files (deepest first); returns what could not be unmounted. */
export async function unmountFiles(mountPoint: string, lazy = false): Promise<string[]> {
  const left: string[] = [];
  for (const m of mountsBelow(mountPoint).filter((x) => x.startsWith(`${mountPoint}/${FILES_DIR}/`))) {
    const why = await run('fusermount', [lazy ? '-uz' : '-u', m]);
    if (why !== undefined) left.push(`${m}: ${why}`);
  }
  return left;
}

/** Runs a command without blocking the event loop; undefined on success, else its stderr (one line). */
function run(cmd: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(`no answer in ${FUSE2FS_TIMEOUT_MS / 1000} s`); }, FUSE2FS_TIMEOUT_MS);
    child.on('error', (e) => { clearTimeout(timer); resolve(e.message); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code === 0 ? undefined : (err.trim().split('\n').pop() || `exit ${signal ?? code}`));
    });
  });
}
