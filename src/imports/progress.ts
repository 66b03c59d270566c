/**
 * Progress of a long CLI command on standard error: a bar with rate and ETA redrawn in place on a
 * terminal, plain lines (at most one every two seconds) when the output is a file or a pipe.
 */
export interface ProgressReporter {
  update(done: number, total: number | null, detail: string): void
  end(): void
}

const formatDuration = (seconds: number) => {
  const s = Math.max(0, Math.round(seconds))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const rest = String(s % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`
}

export function progressReporter(
  label: string,
  stream: NodeJS.WriteStream = process.stderr,
  now: () => number = Date.now,
): ProgressReporter {
  const started = now()
  const tty = stream.isTTY === true
  let lastLine = 0
  let drawn = false
  return {
    update(done, total, detail) {
      const elapsed = (now() - started) / 1000
      const fraction = total && total > 0 ? Math.min(1, done / total) : null
      const eta = fraction && fraction > 0 ? formatDuration((elapsed / fraction) * (1 - fraction)) : '?'
      const percent = fraction === null ? '' : `${Math.floor(fraction * 100)}% `
      if (tty) {
        const width = 24
        const filled = fraction === null ? 0 : Math.round(fraction * width)
        const bar = fraction === null ? '' : `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] `
        stream.write(`\r\x1b[2K${label} ${bar}${percent}${detail} · ETA ${eta}`)
        drawn = true
      } else if (now() - lastLine >= 2000 || fraction === 1) {
        lastLine = now()
        stream.write(
          `${label}: ${percent}${detail}${fraction !== null && fraction < 1 ? ` (ETA ${eta})` : ''}\n`,
        )
      }
    },
    end() {
      if (tty && drawn) stream.write('\n')
    },
  }
}
