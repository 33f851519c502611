"""The run: keyset pages -> fetch -> score -> write -> checkpoint; watch; the webhook."""
