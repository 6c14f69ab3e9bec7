"""Job definitions, trigger matching and command templates: pure logic, no I/O."""
