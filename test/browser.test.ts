// The task board example in a real browser: two tabs, a change in one shows up in the other.
// Debian's chromium driven by playwright-core; skipped (with the reason) when it is not installed.
import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { chromium, type Page } from 'playwright-core'
import t from 'tap'
import { importExample } from './helper.js'

const CHROMIUM = '/usr/bin/chromium'
const SCREENSHOT = '/tmp/tasks-demo.png'
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync'
]

type TasksExample = typeof import('../examples/tasks/app.js')

const skip = existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is missing (apt-get install -y chromium)`

t.test('two tabs of the task board stay in step', { skip }, async (t) => {
  const { buildTasksApp } = await importExample<TasksExample>('examples/tasks/app.ts')
  const app = await buildTasksApp()
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } })
  const errors: string[] = []
  async function open (user: string): Promise<Page> {
    const page = await context.newPage()
    page.on('pageerror', (err) => errors.push(`${user}: ${err.message}`))
    await page.goto(`${url}/?user=${user}`)
    // the page says connected once the server has sent realtime:ready (joined to its boards)
    await page.locator('#state[data-state="connected"]').waitFor()
    return page
  }
  const alice = await open('alice')
  const bob = await open('bob')
  t.equal(await alice.locator('#state').textContent(), 'connected')
  t.equal(await bob.locator('#state').textContent(), 'connected')

  const title = `Browser task ${Date.now()}`
  const inColumn = (page: Page, status: string) =>
    page.getByTestId(`column-${status}`).getByTestId('task').filter({ hasText: title })

  await alice.getByTestId('new-title').fill(title)
  await alice.getByTestId('add').click()
  await inColumn(bob, 'todo').waitFor()
  t.equal(await inColumn(bob, 'todo').count(), 1, "the task appears in bob's tab without a reload")
  t.equal(await inColumn(alice, 'todo').count(), 1, "alice's tab shows it once (no echo duplicate)")
  t.equal(await alice.getByTestId('new-title').inputValue(), '', 'the input is cleared')

  await inColumn(alice, 'todo').getByTestId('move-right').click()
  await inColumn(bob, 'doing').waitFor()
  t.equal(await inColumn(bob, 'todo').count(), 0, 'it left the first column in bob\'s tab')
  t.equal(await inColumn(bob, 'doing').count(), 1, "bob's tab shows it in the new column")
  t.equal(await inColumn(alice, 'doing').count(), 1, "alice's tab moved it too")
  t.match(await bob.getByTestId('activity').textContent(), `alice moved “${title}” to Doing`)

  // and back the other way: bob moves it on, alice sees it
  await inColumn(bob, 'doing').getByTestId('move-right').click()
  await inColumn(alice, 'done').waitFor()
  t.equal(await inColumn(alice, 'doing').count(), 0)

  await bob.screenshot({ path: SCREENSHOT, fullPage: true })
  t.equal(await bob.getByTestId('error').textContent(), '', 'no error shown')
  t.same(errors, [], 'no page errors')
})
