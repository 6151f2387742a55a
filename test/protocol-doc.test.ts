import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'

const PROTOCOL_TS = fileURLToPath(new URL('../src/protocol.ts', import.meta.url))
const PROTOCOL_MD = readFileSync(new URL('../PROTOCOL.md', import.meta.url), 'utf8')

/**
 * What src/protocol.ts declares, read by the TypeScript compiler rather than copied here: the value
 * of every exported `EVENT_*` constant, and the string members of the code and reason unions
 * (however they are written: literal unions, or types derived from const arrays).
 */
function vocabulary (): { events: string[], unions: Record<string, string[]> } {
  const program = ts.createProgram([PROTOCOL_TS], { strict: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext })
  const checker = program.getTypeChecker()
  const source = program.getSourceFile(PROTOCOL_TS)!
  const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(source)!)
  const literals = (type: ts.Type): string[] => (type.isUnion() ? type.types : [type])
    .filter((member): member is ts.StringLiteralType => member.isStringLiteral())
    .map((member) => member.value)
  const events = exports.filter((symbol) => symbol.name.startsWith('EVENT_'))
    .flatMap((symbol) => literals(checker.getTypeOfSymbolAtLocation(symbol, source)))
  const unions: Record<string, string[]> = {}
  for (const name of ['ConnectErrorCode', 'AckErrorCode', 'ResyncReason']) {
    const symbol = exports.find((s) => s.name === name)
    if (symbol !== undefined) unions[name] = literals(checker.getDeclaredTypeOfSymbol(symbol))
  }
  return { events, unions }
}

const { events, unions } = vocabulary()

t.test('the vocabulary was read from src/protocol.ts', async (t) => {
  t.ok(events.length >= 7, `events: ${events.join(', ')}`)
  t.ok(events.includes('realtime:ready') && events.includes('realtime:skip'))
  t.same(Object.keys(unions).sort(), ['AckErrorCode', 'ConnectErrorCode', 'ResyncReason'], 'every list found')
  for (const [name, members] of Object.entries(unions)) t.ok(members.length >= 3, `${name}: ${members.join(', ')}`)
})

t.test('PROTOCOL.md names every event the protocol has', async (t) => {
  for (const event of events) t.ok(PROTOCOL_MD.includes(`\`${event}\``), `\`${event}\` is documented`)
})

t.test('PROTOCOL.md names every connect code, ack code and resync reason', async (t) => {
  for (const [name, members] of Object.entries(unions)) {
    for (const code of members) t.ok(PROTOCOL_MD.includes(`\`${code}\``), `${name} \`${code}\` is documented`)
  }
})

t.test('and gives each event a section or a row of its own', async (t) => {
  for (const event of events) {
    t.match(PROTOCOL_MD, new RegExp(`^(###|\\|) \`${event.replace(':', '\\:')}\``, 'm'), `${event} has a heading or a table row`)
  }
})
