/** The chainfs command line: one file per command, wired here. */
import { Command, CommanderError } from 'commander';
import { EXIT_USAGE, fail, stdoutFailed } from './common';
import { errorDocument, jsonRequested } from './json';

/**
 * The commands, in the order help lists them: [names (the first is the
 * command's, then its aliases), its definition]. A module is loaded only
 * when its command is the one run, or when all are needed (top-level help,
 * an unknown word): `chainfs cat` does not load the mount daemon's CLI.
 */
const COMMANDS: ReadonlyArray<readonly [readonly string[], () => Command]> = [
  [['inspect'], () => (require('./inspect') as typeof import('./inspect')).inspectCommand()],
  [['map'], () => (require('./map') as typeof import('./map')).mapCommand()],
  [['cat'], () => (require('./cat') as typeof import('./cat')).catCommand()],
  [['mount'], () => (require('./mount') as typeof import('./mount')).mountCommand()],
  [['umount', 'unmount'], () => (require('./umount') as typeof import('./umount')).umountCommand()],
  [['mounts'], () => (require('./mounts') as typeof import('./mounts')).mountsCommand()],
  [['export'], () => (require('./export') as typeof import('./export')).exportCommand()],
  [['verify'], () => (require('./verify') as typeof import('./verify')).verifyCommand()],
  [['compare'], () => (require('./compare') as typeof import('./compare')).compareCommand()],
  [['diff'], () => (require('./diff') as typeof import('./diff')).diffCommand()],
];

/** The command line; `argv` (process.argv's shape) picks the one command to define, when its first word names one. */
export function program(argv: readonly string[] = []): Command {
  const p = new Command('chainfs')
    .description('Read Longhorn data offline, never writing to it: replica directories, data roots (a whole node), backup targets (a directory or S3) and v2 disks (SPDK lvstores)')
    .version(require('../../package.json').version)
    .exitOverride();
  // Usage errors as one line like every other error: `chainfs: unknown option '--x'`.
  const output = {
    outputError: (str: string, write: (s: string) => void) => {
      const msg = str.replace(/^error: /, '').trim();
      if (jsonRequested()) process.stdout.write(errorDocument('usage', msg));
      write(`chainfs: ${msg}\n`);
      tellLauncher(`usage ${msg}`);
    },
  };
  p.configureOutput(output);
  const asked = COMMANDS.find(([names]) => names.includes(argv[2]));
  for (const [, define] of asked ? [asked] : COMMANDS) p.addCommand(define().exitOverride().configureOutput(output));
  return p;
}

/**
 * A daemon started by a background mount (src/cli/launch.ts) gets its
 * arguments second-hand: a usage error must reach the user through the
 * ready pipe, not the daemon's log.
 */
function tellLauncher(line: string): void {
  const i = process.argv.indexOf('--ready-fd');
  const fd = i > 0 ? Number(process.argv[i + 1]) : NaN;
  if (!Number.isInteger(fd)) return;
  try {
    require('node:fs').writeSync(fd, `${line.replace(/\n/g, ' ')}\n`);
  } catch {
    // nobody is listening
  }
}

export async function main(argv: string[]): Promise<void> {
  // A reader that goes away (`chainfs export --help | head -1`) ends us
  // quietly with 141, as SIGPIPE would, whatever was writing to stdout.
  // Any other failure (stdout a file on a full disk) is one line and the
  // command's trouble exit: the stream emits it before the writer's own
  // callback could say so.
  process.stdout.on('error', stdoutFailed);
  // stderr is only for people (progress, warnings, the summary): one that
  // cannot be written (`2>export.log` on a full disk, closed by a cron job)
  // must not kill an export half-way, leaving its temporary file behind.
  // There is nobody to tell; the exit status still says how it went.
  process.stderr.on('error', () => undefined);
  try {
    await program(argv).parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors exit 2 (commander already printed the message)
      process.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    fail(e);
  }
}

// bin/chainfs runs this file with Node.
if (require.main === module) void main(process.argv);
