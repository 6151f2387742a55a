import { mock } from 'node:test'
import t from 'tap'
import { MemoryHistoryStore } from '../../src/index.js'
import { storeContract } from './contract.js'

storeContract(t, 'memory', (opts) => new MemoryHistoryStore(opts))

t.test('memory: expired scopes leave nothing behind', async (t) => {
  const clock = { now: 1_700_000_000_000 }
  const store = new MemoryHistoryStore({ ttl: 10, max: 5, now: () => clock.now })
  t.teardown(() => store.close())
  for (let i = 0; i < 10_000; i++) {
    store.append(`user:u${i}`, { id: `e${i}`, event: 'x', payload: i, at: clock.now })
  }
  t.equal(store.scopes, 10_000, 'one log per scope while they are live')
  clock.now += 10_000 + 1
  const position = store.append('team:1', { id: 'last', event: 'x', payload: null, at: clock.now })
  t.equal(position.seq, 1)
  t.equal(store.scopes, 1, 'only the scope still in use holds a log')
  t.equal(store.position('user:u0').seq, 0, 'an expired scope reads as empty')
  t.equal(store.scopes, 1, 'and asking about it does not bring its log back')
})

t.test('memory: close() stops the sweep timer and empties the store', (t) => {
  // setInterval driven by a fake clock for this synchronous block only
  mock.timers.enable({ apis: ['setInterval'] })
  try {
    let sweeps = 0
    let counting = false
    const now = (): number => {
      if (counting) sweeps++
      return 1_700_000_000_000
    }
    const store = new MemoryHistoryStore({ ttl: 1, now })
    store.append('team:1', { id: 'a', event: 'x', payload: 1, at: 0 })
    counting = true
    mock.timers.tick(1000)
    t.equal(sweeps, 1, 'the sweep runs once per interval while open')
    store.close()
    t.equal(store.scopes, 0, 'logs released')
    mock.timers.tick(10_000)
    t.equal(sweeps, 1, 'no sweep after close')
  } finally {
    mock.timers.reset()
  }
  t.end()
})
