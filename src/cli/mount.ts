/**
 * `chainfs mount SOURCE MOUNTPOINT`, following sshfs/squashfuse
 * conventions: without -f the command returns once the mount is ready and
 * readable, leaving a daemon behind; with -f it stays in the foreground and
 * logs to stderr. SIGINT/SIGTERM unmount and exit. `-o` is mount-options.ts,
 * `--files` files.ts, `chainfs umount` umount.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { ChainfsError, UsageError, fsError, oneLine } from '../errors';
import { Log } from '../fuse/log';
import {
  absoluteMountPoint, claimMountPoint, defaultLogPath, fusermount, isStale, mountAt, removeRecord, writeRecord,
} from '../fuse/mountpoint';
import { applyMountOptions, cacheMbValue, collectMountOptions, O_OPTIONS, type DashOOptions } from './mount-options';
import { mibToBytes } from '../units';
import { checkNotInSource, sourcePlaces } from '../materialize/output';
import { startDaemon } from './launch';
import { EXIT_USAGE, action, addSourceOptions, checkVolumeOption, sourceOptions, warn, type SourceCliOptions } from './common';

/** The mount's options as commander parses them (cacheMb, allowOther, debug and the -o ones: DashOOptions). */
interface MountOptions extends SourceCliOptions, DashOOptions {
  foreground?: boolean;
  log?: string;
  readyFd?: number;
  /** Show the files of ext2/3/4 views under MP/files (fuse2fs). */
  files?: boolean;
}

export function mountCommand(): Command {
  return addSourceOptions(new Command('mount'), false)
    .description('mount every view of a source as flat read-only image files (FUSE)')
    .usage('[options] <source...> <mountpoint>')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks; then the mount point, an existing empty directory')
    .option('-f, --foreground', 'stay in the foreground and log to stderr')
    .option('--cache-mb <n>', 'memory for resolved runs, per view (MiB)', (v) => cacheMbValue('', v), 64)
    .option('--allow-other', 'let other users read the images (file modes follow the replica; needs user_allow_other for non-root)')
    .option('--debug', 'log every FUSE request (to the log; to stderr with -f)')
    .option('--files', 'also show the files of ext2/3/4 views (and partitions) under MP/files/<view path>/, read-only, '
      + 'by fuse2fs on the image files: no loop device needed; other file systems: a warning naming guestmount')
    .option('--log <file>', 'daemon log file (default: next to the pid file in /run/chainfs, removed at a clean unmount)')
    .option('-o, --options <opt,...>', `mount options as sshfs/guestmount take them: ${O_OPTIONS}`, collectMountOptions)
    .addOption(new Option('--ready-fd <fd>', 'internal: report readiness on this fd').argParser(Number).hideHelp())
    .addHelpText('after', `
Conventions (like sshfs and guestmount):
  returns once the mount is readable; the daemon logs to /run/chainfs/<mount point>.log (removed at a clean unmount)
  -o allow_other,ro,cache_mb=N,debug    -o ro is accepted (every chainfs mount is read-only)
  chainfs mounts                         lists this host's mounts; chainfs umount MP unmounts (names what keeps it busy)

Examples:
  chainfs mount /var/lib/longhorn /mnt/lh -o allow_other
  chainfs mount REPLICA /mnt/r --files && ls /mnt/r/files/volume.img/etc`)
    .action(action((args: string[], opts: MountOptions) => {
      if (args.length < 2) throw usageError('mount needs a source and a mount point');
      applyMountOptions(opts);
      return mount(args.slice(0, -1), args[args.length - 1], opts);
    }));
}

/** A missing argument: the same exit code and one line as commander's own usage errors. */
function usageError(message: string): Error {
  process.stderr.write(`chainfs: ${message}\n`);
  process.exit(EXIT_USAGE);
}

/** Checks that can fail before any daemon exists, with one clear line each. */
function checkMountPoint(mp: string): void {
  if (isStale(mp)) {
    // A daemon died and left "Transport endpoint is not connected": clear it.
    const r = fusermount(['-uz', mp]);
    if (!r.ok) throw new ChainfsError(mp, `stale FUSE mount could not be cleared: ${r.message}`);
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(mp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ChainfsError(mp, code === 'ENOENT' ? 'mount point does not exist (create it with mkdir)' : `mount point: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) throw new ChainfsError(mp, 'mount point is not a directory');
  if (mountAt(absoluteMountPoint(mp))) throw new ChainfsError(mp, 'mount point is busy: something is already mounted there');
  try {
    if (fs.readdirSync(mp).length > 0) throw new ChainfsError(mp, 'mount point is not empty (the mount would hide its files): use an empty directory');
  } catch (e) {
    if (e instanceof ChainfsError) throw e;
    throw fsError(mp, e, 'cannot list the mount point');
  }
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ChainfsError('/dev/fuse', 'not available: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse');
    }
    throw new ChainfsError('/dev/fuse', 'permission denied: run chainfs as root (e.g. with sudo); mounting also works for members of the group that owns /dev/fuse (often "fuse")');
  }
}

async function mount(sources: string[], mountPoint: string, opts: MountOptions): Promise<void> {
  const mp = absoluteMountPoint(mountPoint);
  if (!opts.foreground && opts.readyFd === undefined) return background(sources, mp, opts);
  const ready = opts.readyFd === undefined ? undefined : new ReadyPipe(opts.readyFd);
  try {
    await serve(sources, mp, opts, ready);
  } catch (e) {
    // The waiting parent prints this as its one line (and exits 2 for a usage
    // error found once the source is open, as fail() does); fail() logs it too.
    ready?.say(e instanceof UsageError ? 'usage' : 'error', e instanceof ChainfsError ? e.message : `internal error: ${(e as Error).message}`);
    throw e;
  }
}

/**
 * The daemon: opens the source (metadata only), checks the mount point,
 * mounts, and serves until unmounted or signalled. A source none of whose
 * views is readable is refused with the first view's reason. Done once, in
 * this process: a background mount's parent only waits for the verdict on
 * the ready pipe.
 */
async function serve(sources: string[], mp: string, opts: MountOptions, ready: ReadyPipe | undefined): Promise<void> {
  // Lazy: a source may leave directories to list on first use (a backup target's volumes);
  // --files reads every view's first MiB at mount, so it lists everything.
  const { openSource } = await import('../source/open');
  const catalog = await openSource(sources, { ...sourceOptions(opts), lazy: !opts.files });
  checkVolumeOption(catalog, opts.volume);
  const views = catalog.views();
  if (views.length > 0 && views.every((v) => v.problem)) throw new ChainfsError(undefined, views[0].problem!);
  // Held from the checks until the mount is there (or this process exits): another
  // `chainfs mount` on the same directory meanwhile is refused, not stacked.
  const release = claimMountPoint(mp);
  process.once('exit', release);
  checkMountPoint(mp);
  // A background daemon logs to its log file (by default next to its pid file).
  const logFile = opts.log ?? (ready ? defaultLogPath(mp) : undefined);
  if (logFile) checkNotInSource(logFile, sourcePlaces(sources), 'the log (--log)');
  const logFd = logFile ? openLog(logFile) : 2;
  const log = new Log(logFd, opts.debug);
  const unserved = views.filter((v) => v.problem).map((v) => `${v.path} is not served: ${v.problem}`);
  const told = new Set<string>();
  const tell = (w: string) => {
    if (told.has(w)) return; // once per run, whichever layer found it
    told.add(w);
    log.info(`warning: ${w}`);
    if (ready) ready.say('warn', w);
    else if (logFd !== 2) warn(w);
  };
  // --files: which views hold ext2/3/4 (their first MiB), and the directories fuse2fs mounts on.
  const files = opts.files ? await import('./files') : undefined;
  const plan = files ? await files.planFiles(catalog, mp) : undefined;
  for (const w of [...catalog.warnings, ...unserved, ...(catalog.inUse?.() ?? []), ...(plan?.warnings ?? [])]) tell(w);
  const served = files && plan ? files.withFilesDirectories(catalog, plan) : catalog;
  const { MountDaemon } = await import('../fuse/daemon'); // the FUSE binding: only the daemon needs it
  const daemon = new MountDaemon(served, mp, {
    cacheBytes: mibToBytes(opts.cacheMb), allowOther: !!opts.allowOther, debug: !!opts.debug, log,
  });
  try {
    await daemon.mount();
  } catch (e) {
    throw new ChainfsError(mp, `mount failed: ${(e as Error).message}${process.getuid?.() !== 0 ? ' (not root: is fusermount allowed?)' : ''}`);
  }
  writeRecord(mp, { pid: process.pid, replica: absoluteLabel(catalog.label), log: logFile ?? '', since: new Date().toISOString() });
  release();
  let exiting = false;
  const exit = async (why: string, code: number) => {
    if (exiting) return;
    exiting = true;
    log.info(`${why}: unmounting ${mp}`);
    if (files) for (const w of await files.unmountFiles(mp)) log.error(`could not unmount ${w}`);
    await daemon.unmount();
    removeRecord(mp, process.pid);
    // Our own log (not one the user named, nor a --debug one) goes with a
    // clean unmount: /run/chainfs does not fill up.
    if (logFile === defaultLogPath(mp) && !opts.debug && code === 0 && !mountAt(mp)) fs.rmSync(logFile, { force: true });
    catalog.close();
    process.exit(code);
  };
  process.on('SIGINT', () => void exit('SIGINT', 0));
  process.on('SIGTERM', () => void exit('SIGTERM', 0));
  process.on('SIGHUP', () => void exit('SIGHUP', 0));
  daemon.onExternalUnmount = () => void exit('unmounted', 0);
  log.info(`mounted ${catalog.label} on ${mp}`);
  if (files && plan) {
    for (const w of await files.mountFiles(mp, plan, !!opts.allowOther)) tell(w);
    log.info(`--files: ${plan.targets.length} file system(s) under ${mp}/${files.FILES_DIR}`);
  }

  // Tell the waiting parent that the mount is readable (an async stat: this
  // process serves it).
  if (ready) {
    await fs.promises.readdir(mp);
    ready.say('ok');
    ready.close();
  }
}

function openLog(file: string): number {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    return fs.openSync(file, 'a');
  } catch (e) {
    throw fsError(file, e, 'cannot open the log file');
  }
}

/**
 * The daemon's side of the ready pipe: one line per message,
 * `warn TEXT`, then `ok`, `error TEXT` or `usage TEXT` (a usage error found once the source is open).
 */
class ReadyPipe {
  constructor(private fd: number | undefined) {}

  say(kind: 'warn' | 'ok' | 'error' | 'usage', text = ''): void {
    if (this.fd === undefined) return;
    try {
      fs.writeSync(this.fd, `${kind}${text ? ` ${oneLine(text)}` : ''}\n`);
    } catch {
      this.fd = undefined; // the parent is gone: nobody to tell
    }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/**
 * Starts the daemon detached and waits for its verdict (src/cli/launch.ts),
 * printing its warnings. Used when bin/chainfs's fast path did not apply
 * (e.g. --debug, whose libfuse output goes to the log through stderr).
 */
async function background(sources: string[], mp: string, opts: MountOptions): Promise<void> {
  const logPath = opts.log ?? defaultLogPath(mp);
  checkNotInSource(logPath, sourcePlaces(sources), 'the log (--log)'); // before it is opened here
  // The daemon's stdout/stderr go to its log. If we cannot open it here, the
  // daemon reports that itself, after the replica checks that come first.
  let logFd: number | 'ignore' = 'ignore';
  try {
    fs.mkdirSync(path.dirname(logPath), { recursive: true, mode: 0o700 });
    logFd = fs.openSync(logPath, 'a');
  } catch {
    // see above
  }
  // The daemon gets the user's own arguments (sources, options) again.
  const at = process.argv.indexOf('mount');
  const args = [...process.argv.slice(at), '--log', logPath];
  const verdict = await startDaemon(args, logFd, warn);
  if (logFd !== 'ignore') fs.closeSync(logFd);
  if (verdict.ok) return;
  if (verdict.usage) {
    process.stderr.write(`chainfs: ${verdict.message}\n`);
    process.exit(EXIT_USAGE);
  }
  const tail = verdict.message.startsWith('the daemon exited') ? lastError(logPath) : undefined;
  throw new ChainfsError(undefined, tail ?? `${verdict.message}; see ${logPath}`);
}

/**
 * The source as `chainfs mounts` shows it from any directory: the label
 * made absolute when it names one path (which may hold a comma), else each
 * comma-separated path of it (several v2 disks; URLs such as s3://bucket
 * stay as they are).
 */
function absoluteLabel(label: string): string {
  if (!label.includes('://') && fs.existsSync(path.resolve(label))) return path.resolve(label);
  return label.split(',').map((p) => (p.includes('://') || path.isAbsolute(p) ? p : path.resolve(p))).join(',');
}

/** The daemon's last error line, for the one-line message of a failed background mount. */
function lastError(logPath: string): string | undefined {
  try {
    const lines = fs.readFileSync(logPath, 'utf8').trim().split('\n').reverse();
    const l = lines.find((x) => x.startsWith('chainfs: ') || x.includes(' error: '));
    return l?.replace(/^chainfs: /, '').replace(/^.* error: /, '');
  } catch {
    return undefined;
  }
}
