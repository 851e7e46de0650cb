/**
 * Safe output: nothing appears at OUT until the export is complete and on
 * disk. The image is written under a temporary name in OUT's directory
 * (`.OUT.chainfs-PID.tmp`, a file or, for the Longhorn layout, a directory),
 * fsynced, renamed over OUT, and the directory is fsynced. abort() removes
 * the temporary name; it is synchronous so that a signal handler can call
 * it. A SIGKILL leaves the temporary name behind, never a partial OUT.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError } from '../errors';
import { fileKind } from '../source/replica/files';

export type OutputKind = 'file' | 'dir';

export interface OutputPlan {
  /** OUT as the user gave it, for messages. */
  display: string;
  /** OUT, absolute (its directory resolved through symlinks). */
  path: string;
  dir: string;
  kind: OutputKind;
  /** OUT exists and will be replaced (--overwrite). */
  replace: boolean;
}

/** What a replaced Longhorn-layout directory may hold: our own two files. */
const LAYOUT_ENTRIES = new Set(['backing', 'backing.cfg']);
/** Image data is the volume's content: readable by its owner only. */
const IMAGE_MODE = 0o600;
const DIR_MODE = 0o755;
const SIDECAR_MODE = 0o644;

/**
 * Checks OUT before anything is opened for writing: its directory exists,
 * it is new (or replaceable with --overwrite), and it is not inside the
 * source replica nor holds a source file (the source is never written).
 */
export function planOutput(out: string, kind: OutputKind, overwrite: boolean, sourceRoots: string[],
  sourceFiles: string[]): OutputPlan {
  const base = path.basename(path.resolve(out));
  if (base === '' || base === '.' || base === '..' || (out.endsWith('/') && kind === 'file')) {
    // `OUT/` names a directory (an existing one was taken as the place to write into before this).
    if (out.endsWith('/') && base !== '' && !fs.existsSync(out)) throw new ChainfsError(out, 'no such directory');
    throw new ChainfsError(out, 'not a file name for the output');
  }
  const dir = realDirectory(path.dirname(path.resolve(out)), out);
  const abs = path.join(dir, base);
  for (const root of sourceRoots.map(realOr)) {
    if (abs === root || isInside(abs, root)) {
      throw new ChainfsError(out, `is inside the source ${root}; write the export somewhere else`);
    }
  }
  for (const f of sourceFiles.map(realOr)) {
    if (f === abs || (kind === 'dir' && isInside(f, abs))) {
      throw new ChainfsError(out, `${kind === 'dir' ? 'holds' : 'is'} a file the export reads (${f}); write it somewhere else`);
    }
  }
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(out, e);
  }
  if (st) {
    if (!overwrite) throw new ChainfsError(out, 'already exists; pass --overwrite to replace it');
    checkReplaceable(out, abs, kind, st);
  }
  return { display: out, path: abs, dir, kind, replace: st !== undefined };
}

function checkReplaceable(out: string, abs: string, kind: OutputKind, st: fs.Stats): void {
  if (kind === 'file') {
    if (!st.isFile() && !st.isSymbolicLink()) throw new ChainfsError(out, `exists and is ${fileKind(st)}; refusing to replace it`);
    return;
  }
  if (!st.isDirectory()) throw new ChainfsError(out, `exists and is not a directory (${fileKind(st)}); refusing to replace it with a backing image directory`);
  const other = fs.readdirSync(abs).filter((n) => !LAYOUT_ENTRIES.has(n));
  if (other.length > 0) {
    throw new ChainfsError(out, `exists and holds more than a backing image (${other.slice(0, 3).join(', ')}${other.length > 3 ? ', ...' : ''}); refusing to replace it`);
  }
}

export class AtomicOutput {
  readonly plan: OutputPlan;
  /** The temporary name (file or directory) in OUT's directory. */
  readonly tmpPath: string;
  /** Where the image is being written: tmpPath, or tmpPath/backing for a directory. */
  readonly imageTmpPath: string;
  /** The image file's descriptor, open for writing until sync(). */
  fd: number;
  private done = false;

  private constructor(plan: OutputPlan, tmpPath: string, imageTmpPath: string, fd: number) {
    this.plan = plan;
    this.tmpPath = tmpPath;
    this.imageTmpPath = imageTmpPath;
    this.fd = fd;
  }

  /** Creates the temporary output; for a directory, `imageName` is the image file inside it. */
  static create(plan: OutputPlan, imageName = 'backing'): AtomicOutput {
    const tmp = path.join(plan.dir, `.${path.basename(plan.path)}.chainfs-${process.pid}.tmp`);
    try {
      if (plan.kind === 'dir') {
        fs.mkdirSync(tmp, { mode: DIR_MODE });
        fs.chmodSync(tmp, DIR_MODE); // not narrowed by the umask
      }
      const image = plan.kind === 'dir' ? path.join(tmp, imageName) : tmp;
      const fd = fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, IMAGE_MODE);
      return new AtomicOutput(plan, tmp, image, fd);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw fsError(plan.display, e, `cannot create the temporary output ${tmp}`);
    }
  }

  /** The image's final path. */
  get imagePath(): string {
    return this.plan.kind === 'dir' ? path.join(this.plan.path, path.basename(this.imageTmpPath)) : this.plan.path;
  }

  /** Flushes the image to disk and closes it. */
  sync(): void {
    try {
      fs.fsyncSync(this.fd);
    } catch (e) {
      throw writeFailed(this.plan.display, e);
    }
    fs.closeSync(this.fd);
    this.fd = -1;
  }

  /** Writes (and fsyncs) a small file next to the image in a directory output. */
  writeSidecar(name: string, content: string): void {
    if (this.plan.kind !== 'dir') throw new Error('writeSidecar: not a directory output');
    const p = path.join(this.tmpPath, name);
    try {
      const fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, SIDECAR_MODE);
      try {
        fs.writeFileSync(fd, content);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      throw writeFailed(this.plan.display, e);
    }
  }

  /** Renames the temporary output to OUT (replacing it if planned) and fsyncs the directory. */
  commit(): void {
    const { path: out, display } = this.plan;
    try {
      if (this.plan.kind === 'dir') {
        fsyncPath(this.tmpPath);
        this.renameDirectory(out);
      } else if (this.plan.replace) {
        fs.renameSync(this.tmpPath, out);
      } else {
        this.linkNew(out);
      }
      this.done = true;
      fsyncPath(this.plan.dir);
    } catch (e) {
      if (e instanceof ChainfsError) throw e;
      throw fsError(display, e, 'cannot move the finished export into place');
    }
  }

  /**
   * OUT did not exist when the export began: put the file there only if it
   * still does not (link fails with EEXIST, atomically), so that another
   * export to the same OUT meanwhile is never silently replaced. Where hard
   * links are not supported, a check and a rename.
   */
  private linkNew(out: string): void {
    try {
      fs.linkSync(this.tmpPath, out);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw appeared(this.plan.display);
      if (code !== 'EPERM' && code !== 'EOPNOTSUPP' && code !== 'ENOTSUP') throw e;
      if (fs.existsSync(out)) throw appeared(this.plan.display);
      fs.renameSync(this.tmpPath, out);
      return;
    }
    fs.unlinkSync(this.tmpPath);
  }

  /** A directory cannot be renamed over a non-empty one: move the old one aside first. */
  private renameDirectory(out: string): void {
    if (!this.plan.replace || !fs.existsSync(out)) {
      if (!this.plan.replace && fs.existsSync(out)) throw appeared(this.plan.display);
      fs.renameSync(this.tmpPath, out);
      return;
    }
    const old = path.join(this.plan.dir, `.${path.basename(out)}.chainfs-${process.pid}.old`);
    fs.renameSync(out, old);
    try {
      fs.renameSync(this.tmpPath, out);
    } catch (e) {
      fs.renameSync(old, out);
      throw e;
    }
    fs.rmSync(old, { recursive: true, force: true });
  }

  /** Removes the temporary output (idempotent; never throws). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    if (this.fd >= 0) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // already closed
      }
      this.fd = -1;
    }
    try {
      fs.rmSync(this.tmpPath, { recursive: true, force: true });
    } catch {
      // nothing more we can do; the name says what it is
    }
  }
}

/**
 * Removes the temporary outputs of earlier exports to the same OUT whose
 * process is gone (a SIGKILL or a crash leaves them); returns their paths.
 * Only `.tmp` names: a `.old` directory may be the only copy of a replaced
 * export if the machine died between the two renames of a commit.
 */
export function removeStaleTemporaries(plan: OutputPlan): string[] {
  const base = path.basename(plan.path);
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(plan.dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = /^\.(.+)\.chainfs-(\d+)\.tmp$/.exec(n);
    if (!m || m[1] !== base || Number(m[2]) === process.pid || processExists(Number(m[2]))) continue;
    const p = path.join(plan.dir, n);
    try {
      fs.rmSync(p, { recursive: true, force: true });
      removed.push(p);
    } catch {
      // not ours to remove after all; leave it
    }
  }
  return removed;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A failed write to the output, as one line; ENOSPC says so plainly. */
export function writeFailed(out: string, err: unknown): ChainfsError {
  if (err instanceof ChainfsError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new ChainfsError(out, `${e.code === 'ENOSPC' ? 'no space left on device' : 'disk quota exceeded'} while writing the export; nothing was left behind`, e.code);
  }
  return fsError(out, err, 'write failed');
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function realDirectory(dir: string, out: string): string {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (e) {
    throw fsError(out, e, 'the output directory is not usable');
  }
  if (!fs.statSync(real).isDirectory()) throw new ChainfsError(out, `${dir} is not a directory`);
  return real;
}

function appeared(display: string): ChainfsError {
  return new ChainfsError(display, 'appeared while the export ran (another export to the same name?); it was not replaced and this export was not kept: pass --overwrite to replace it', 'EEXIST');
}

function realOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

function isInside(p: string, dir: string): boolean {
  return p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * Where a source lives on this machine, for "never write inside it": each
 * local source path as given (a replica directory, a data root, a target
 * directory, a disk image), and for a replica directory also its data root
 * (`<root>/replicas/<dir>` -> `<root>`), whose backing-images/ and replicas/
 * Longhorn owns. URLs (s3://) have no local place.
 */
export function sourcePlaces(sources: string[]): string[] {
  const out: string[] = [];
  for (const s of sources) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s) && !s.startsWith('vfs://')) continue;
    const p = realOr(s.startsWith('vfs://') ? s.slice('vfs://'.length).replace(/\?.*$/, '') : s);
    out.push(p);
    if (path.basename(path.dirname(p)) === 'replicas') out.push(path.dirname(path.dirname(p)));
  }
  return out;
}

/**
 * Refuses a file chainfs would write (a log, a cache) at or inside one of
 * `places` (see sourcePlaces): sources are never written. Throws ChainfsError
 * naming the file and `what` it is.
 */
export function checkNotInSource(file: string, places: string[], what: string): void {
  const abs = path.join(realOr(path.dirname(path.resolve(file))), path.basename(file));
  for (const p of places) {
    if (abs === p || isInside(abs, p)) {
      throw new ChainfsError(file, `${what} would be written inside the source ${p}; sources are never written: put it somewhere else`);
    }
  }
}
