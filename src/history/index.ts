import type { NormalizedOptions } from '../options.js'
import { MemoryHistoryStore } from './memory.js'
import { RedisHistoryStore } from './redis.js'
import type { HistoryStore } from './store.js'

/** The store `history` names, and whether the plugin owns it (and closes it on `close()`). */
export function createStore (history: NormalizedOptions['history']): { store: HistoryStore | null, owned: boolean } {
  if (history === false) return { store: null, owned: false }
  const { store, ttl, max } = history
  if (store === 'memory') return { store: new MemoryHistoryStore({ ttl, max }), owned: true }
  if (store === 'redis') return { store: new RedisHistoryStore({ ttl, max }), owned: true }
  return { store, owned: false }
}
