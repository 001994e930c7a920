"""The pymail benchmark: a private Postfix + Dovecot relay on loopback,
a delaying proxy, and cold sends, peak memory and a batch measured for
pymail, s-nail and msmtp."""
