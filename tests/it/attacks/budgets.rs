//! Budgets that hold under pressure: concurrent diffs, resends of big answers.
