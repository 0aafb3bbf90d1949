"""Real-browser tests: headless Chromium driven by Playwright against a dev portal."""
