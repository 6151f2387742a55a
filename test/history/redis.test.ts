import t from 'tap'
import { Redis } from 'ioredis'
import { RedisHistoryStore } from '../../src/index.js'
import { redisOptions } from '../redis-helper.js'
import { storeContract } from './contract.js'

// every case gets an empty store of its own: a fresh key prefix, deleted at the end
storeContract(t, 'redis', async (opts) => {
  const client = new Redis(redisOptions(t))
  const store = new RedisHistoryStore(opts)
  store.attach(client)
  return Object.assign(store, { close: () => { client.disconnect() } })
})

t.test('redis: append, trim and expiry happen together', async (t) => {
  const options = redisOptions(t)
  const client = new Redis(options)
  t.teardown(() => { client.disconnect() })
  const store = new RedisHistoryStore({ ttl: 30, max: 3 })
  store.attach(client)
  for (let i = 1; i <= 4; i++) await store.append('team:1', { id: `e${i}`, event: 'n', payload: i, at: Date.now() })
  t.equal(await client.llen('rt:l:team:1'), 3, 'the list holds max events')
  for (const key of ['rt:l:team:1', 'rt:m:team:1']) {
    const ttl = await client.pttl(key)
    t.ok(ttl > 25_000 && ttl <= 30_000, `${key} expires with the ttl`)
  }
})
