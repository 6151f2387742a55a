// Shared by the browser tests: Debian's chromium driven by playwright-core, and a directory of
// each run's own for screenshots, where every open page is saved when the test fails.
import { existsSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser, type BrowserContext } from 'playwright-core'
import type { Test } from 'tap'

export const CHROMIUM = '/usr/bin/chromium'
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

/** `skip` for a browser test: false, or why it cannot run here. */
export const noBrowser = existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is missing (apt-get install -y chromium)`

/** Chromium, closed at teardown. */
export async function launch (t: Test): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  t.teardown(() => browser.close())
  return browser
}

/**
 * A directory of this run's own for screenshots, named in the output. If the test fails, every
 * page still open in `contexts` is saved there before the browser closes.
 */
export async function screenshots (t: Test, ...contexts: BrowserContext[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'frt-screenshots-'))
  t.comment(`screenshots in ${dir}`)
  t.teardown(async () => {
    if (t.passing()) return
    const pages = contexts.flatMap((context) => context.pages())
    await Promise.all(pages.map(async (page, i) => {
      const user = new URL(page.url()).searchParams.get('user') ?? 'blank'
      const path = join(dir, `failed-${i + 1}-${user}.png`)
      await page.screenshot({ path, fullPage: true }).then(() => t.comment(`failed: see ${path}`),
        (err: Error) => t.comment(`failed, and no screenshot of page ${i + 1}: ${err.message}`))
    }))
  })
  return dir
}
