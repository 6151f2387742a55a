import { readFileSync } from 'node:fs'
import t from 'tap'

// Security floors (RELIABILITY.md "Versions"): every copy in the lockfile must be at or above them.
const FLOORS: Record<string, string> = {
  'socket.io': '4.8.0',
  'engine.io': '6.6.10',
  'socket.io-parser': '4.2.7',
  ws: '8.21.1',
  'fast-jwt': '6.3.1'
}

function atLeast (version: string, floor: string): boolean {
  const a = version.split(/[.-]/).slice(0, 3).map(Number)
  const b = floor.split('.').map(Number)
  for (let i = 0; i < 3; i++) {
    if (a[i]! !== b[i]!) return a[i]! > b[i]!
  }
  return true
}

t.test('lockfile meets the dependency floors', async (t) => {
  const lock = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8')) as {
    packages: Record<string, { version?: string }>
  }
  const seen = new Set<string>()
  for (const [path, entry] of Object.entries(lock.packages)) {
    const name = path.split('node_modules/').pop()!
    const floor = FLOORS[name]
    if (floor === undefined || entry.version === undefined) continue
    seen.add(name)
    t.ok(atLeast(entry.version, floor), `${path} ${entry.version} >= ${floor}`)
  }
  t.same([...seen].sort(), Object.keys(FLOORS).sort(), 'every floored package is in the lockfile')
})
