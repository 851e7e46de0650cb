import * as fs from 'node:fs';

/** Waits until `pid` runs `comm` (a spawned child is `node` until its exec); throws after 5 s. */
export async function untilRunning(pid: number | undefined, comm: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) return;
    } catch {
      // not there yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`process ${pid} did not start ${comm}`);
}
