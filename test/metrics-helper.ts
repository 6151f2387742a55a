import { Registry } from 'prom-client'

/** A fresh prom-client registry for one test. */
export function registry (): Registry {
  return new Registry()
}

/** One sample of the exposition text: its name, its labels and its value. */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** Every sample in prom-client's text format (the `registry.metrics()` a `/metrics` route serves). */
export function parseMetrics (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!
    samples.push({ name: match[1]!, labels, value: Number(match[3]) })
  }
  return samples
}

/**
 * Reads the registry as a scrape would, and returns a lookup: `value('realtime_handshakes_total',
 * { result: 'ok' })` is that sample's value, or undefined when the registry does not have it.
 */
export async function scrape (reg: Registry): Promise<{ samples: Sample[], value: (name: string, labels?: Record<string, string>) => number | undefined }> {
  const samples = parseMetrics(await reg.metrics())
  const value = (name: string, labels: Record<string, string> = {}): number | undefined => samples.find((s) =>
    s.name === name &&
    Object.keys(s.labels).length === Object.keys(labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
  return { samples, value }
}
