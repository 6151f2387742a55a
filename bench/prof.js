// Summarises a .cpuprofile (from `npm run bench -- --cpu-prof`): self and total time per
// function, heaviest first. Usage: node bench/prof.js <file.cpuprofile> [--filter=dist/] [--top=30]
import { readFileSync } from 'node:fs'

const [file, ...rest] = process.argv.slice(2)
if (file === undefined) {
  console.error('usage: node bench/prof.js <file.cpuprofile> [--filter=substring] [--top=30]')
  process.exit(2)
}
const opt = Object.fromEntries(rest.map((a) => a.replace(/^--/, '').split('=')))
const top = Number(opt.top ?? 30)
const profile = JSON.parse(readFileSync(file, 'utf8'))

const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map()
for (const n of profile.nodes) self.set(n.id, 0)
const samples = profile.samples
const deltas = profile.timeDeltas
for (let i = 0; i < samples.length; i++) self.set(samples[i], self.get(samples[i]) + (deltas[i] ?? 0))

const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

const key = (n) => {
  const f = n.callFrame
  const url = f.url.replace(/^file:\/\/.*node_modules\//, '').replace(/^file:\/\/.*?\/(dist|bench|src)\//, '$1/')
  return `${f.functionName || '(anonymous)'} ${url}:${f.lineNumber + 1}`
}
const selfBy = new Map()
const totalBy = new Map()
let all = 0
for (const n of profile.nodes) {
  const t = self.get(n.id)
  all += t
  const k = key(n)
  selfBy.set(k, (selfBy.get(k) ?? 0) + t)
  // total: add this node's self time to every distinct function on its stack
  const seen = new Set()
  for (let id = n.id; id !== undefined; id = parent.get(id)) {
    const kk = key(byId.get(id))
    if (seen.has(kk)) continue
    seen.add(kk)
    totalBy.set(kk, (totalBy.get(kk) ?? 0) + t)
  }
}
const filter = opt.filter
const show = (title, map) => {
  console.log(`\n${title} (of ${(all / 1000).toFixed(0)} ms sampled)`)
  const list = [...map].filter(([k]) => filter === undefined || k.includes(filter)).sort((a, b) => b[1] - a[1]).slice(0, top)
  for (const [k, t] of list) console.log(`${(t / 1000).toFixed(1).padStart(9)} ms ${(100 * t / all).toFixed(1).padStart(5)} %  ${k}`)
}
show('self time', selfBy)
show('total time', totalBy)
