/**
 * A one-line progress display on stderr, shown only when stderr is a
 * terminal (never in logs or tests) and redrawn at most 10 times a second.
 *
 * @module
 */

/** Progress of one long piece of work. */
export interface Progress {
  /** Reports that done out of total units are finished; detail is shown after. */
  update(done: number, total: number, detail?: string): void;
  /** Clears the line. */
  done(): void;
}

const REDRAW_MS = 100;

/** A progress line labelled `label` on stderr (a silent one when stderr is not a terminal). */
export function progressLine(label: string): Progress {
  if (!Deno.stderr.isTerminal()) return { update() {}, done() {} };
  const encoder = new TextEncoder();
  let last = 0;
  const write = (text: string) => Deno.stderr.writeSync(encoder.encode(text));
  return {
    update(done, total, detail = "") {
      const now = performance.now();
      if (now - last < REDRAW_MS && done < total) return;
      last = now;
      const percent = total > 0 ? Math.floor((done / total) * 100) : 100;
      write(`\r\x1b[2K${label} ${String(percent).padStart(3)}% ${detail}`);
    },
    done() {
      write("\r\x1b[2K");
    },
  };
}
